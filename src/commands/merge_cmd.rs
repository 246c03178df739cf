//! `vlmrun merge [--output DIR]`: merges the shards a data-parallel `baseline` left in DIR (default
//! output.dir), for when rank 0 did not (it died, timed out, or the ranks ran as separate jobs).

use std::path::Path;

use super::Context;
use crate::baseline::shards::merged;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, output: Option<&Path>) -> Result<Exit, Error> {
    let dir = output.unwrap_or(&context.config.config.output.dir);
    merged::merge_directory(dir, context.quiet)
}
