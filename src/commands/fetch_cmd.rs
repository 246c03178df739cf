//! `vlmrun fetch HUB_ID`: downloads into the Hugging Face cache (cargo feature `hub`; the default build
//! says how to get the files another way).

use super::Context;
use crate::error::Error;
use crate::exit::Exit;

#[cfg(feature = "hub")]
pub fn run(context: &Context, id: &str, revision: &str) -> Result<Exit, Error> {
    let offline = context.config.config.model.offline || crate::hub::offline_from_env();
    let show_progress = !context.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let dir = crate::hub::fetch::fetch(id, revision, offline, show_progress)?;
    super::print_stdout(&format!("{}\n", dir.display()))?;
    Ok(Exit::Success)
}

#[cfg(not(feature = "hub"))]
pub fn run(_context: &Context, id: &str, revision: &str) -> Result<Exit, Error> {
    Err(Error::Usage(format!(
        "this vlmrun was built without downloads (cargo feature `hub`)\n  fix: rebuild with `cargo build --release --features hub`, or download with `huggingface-cli download {id} --revision {revision}` (same cache layout: vlmrun finds it there), or point model.source at a local directory"
    )))
}
