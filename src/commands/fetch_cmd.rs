//! `vlmrun fetch HUB_ID`: downloads a model into the Hugging Face cache and prints its snapshot
//! directory (cargo feature `hub`, on by default; a build without it says how to get the files another
//! way). Commands that run a model download what is missing by themselves; `fetch` also refreshes a
//! branch that moved on the hub.

use super::Context;
use crate::error::Error;
use crate::exit::Exit;

#[cfg(feature = "hub")]
pub fn run(context: &Context, id: &str, revision: &str) -> Result<Exit, Error> {
    let offline = crate::hub::Offline::from_config(context.config.config.model.offline);
    let dir = crate::hub::fetch::fetch(id, revision, offline.is_offline(), !context.quiet)?;
    super::print_stdout(&format!("{}\n", dir.display()))?;
    Ok(Exit::Success)
}

#[cfg(not(feature = "hub"))]
pub fn run(_context: &Context, id: &str, revision: &str) -> Result<Exit, Error> {
    Err(Error::Usage(format!(
        "this vlmrun was built without downloads (cargo feature `hub` off)\n  fix: rebuild with the default features (`cargo install --path .`), or download with `huggingface-cli download {id} --revision {revision}` (same cache layout: vlmrun finds it there), or point model.source at a local directory"
    )))
}
