//! `vlmrun baseline [--fresh]`: installs the Ctrl-C handler (first press: finish the batch in flight, save,
//! write a partial report, exit 130; second press: exit at once) and runs the baseline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Context;
use crate::baseline::{self, RunOptions};
use crate::device::probe_system;
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, fresh: bool) -> Result<Exit, Error> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let quiet = context.quiet;
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
        if !quiet {
            eprintln!(
                "\ninterrupt: finishing the batch in flight and saving (Ctrl-C again to quit now)"
            );
        }
    });
    if let Err(err) = installed {
        tracing::warn!(
            "Ctrl-C handling unavailable ({err}); an interrupt loses at most the batch in flight"
        );
    }
    let facts = probe_system();
    let options = RunOptions {
        fresh,
        interrupted,
        quiet: context.quiet,
    };
    baseline::run(&context.config, &facts, &context.cuda, &options)
}
