//! `vlmrun merge [--output DIR]`: merges the shards a data-parallel `baseline` left in DIR (default
//! output.dir), for when rank 0 did not (it died, timed out, or the ranks ran as separate jobs).

use std::path::Path;

use super::Context;
use crate::baseline::shards::merged;
use crate::error::Error;
use crate::exit::Exit;
use crate::report::lock;

pub fn run(context: &Context, output: Option<&Path>) -> Result<Exit, Error> {
    let dir = output.unwrap_or(&context.config.config.output.dir);
    // Refused while any rank (or another run) still holds the directory; a missing directory is
    // left for the merge to report (not created).
    let _lock = match dir.is_dir() {
        true => Some(lock::exclusive(dir)?),
        false => None,
    };
    merged::merge_directory(dir, context.quiet)
}
