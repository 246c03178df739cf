//! `vlmrun baseline [--fresh]`: installs the Ctrl-C handler (first press: finish the batch in flight, save,
//! write a partial report, exit 130; second press: exit at once) and runs the baseline.

use super::{interrupt, Context};
use crate::baseline::{self, RunOptions};
use crate::device::probe_system;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, fresh: bool) -> Result<Exit, Error> {
    let interrupted = interrupt::install(context.quiet, "finishing the batch in flight and saving");
    let facts = probe_system();
    let options = RunOptions {
        fresh,
        interrupted,
        quiet: context.quiet,
    };
    baseline::run(&context.config, &facts, &context.cuda, &options)
}
