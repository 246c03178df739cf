//! `vlmrun train [--resume|--fresh] [--plot FILE]`: takes the output directory's lock, installs the Ctrl-C handler (first press:
//! finish the step in flight, save a checkpoint, exit 130) and runs the training loop.

use super::{interrupt, Context};
use crate::cli::TrainArgs;
use crate::device::probe_system;
use crate::error::Error;
use crate::exit::Exit;
use crate::report::output::lock_output_dir;
use crate::train::run::{self, TrainOptions};

pub fn run(context: &Context, args: &TrainArgs) -> Result<Exit, Error> {
    // One trainer per output directory, held to the end (a second one, `--fresh` or not, is refused).
    let _lock = lock_output_dir(&context.config.config.output.dir)?;
    let interrupted = interrupt::install(
        context.quiet,
        "finishing the step in flight and saving a checkpoint",
    );
    let facts = probe_system();
    let options = TrainOptions {
        resume: args.resume,
        fresh: args.fresh,
        interrupted,
        quiet: context.quiet,
        plot: args.plot.clone(),
        dump_grads: args.dump_grads.clone(),
        checkpoints: true,
        console: context.console.clone(),
    };
    run::run(&context.config, &facts, &context.cuda, &options)
}
