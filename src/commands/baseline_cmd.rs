//! `vlmrun baseline [--fresh] [--rank K --world-size N]`: installs the Ctrl-C handler (first press: finish
//! the batch in flight, save, write a partial report, exit 130; second press: exit at once), finds this
//! process's rank (flags, then the launcher's environment) and runs the baseline.

use std::time::Duration;

use super::{interrupt, Context};
use crate::baseline::shards::{done, ranked::RankSetup};
use crate::baseline::{self, RunOptions};
use crate::cli::BaselineArgs;
use crate::device::probe_system;
use crate::distributed::{self, command, Env, RankFlags};
use crate::error::Error;
use crate::exit::Exit;

pub fn run(context: &Context, args: &BaselineArgs) -> Result<Exit, Error> {
    // vars_os: a variable that is not UTF-8 is skipped instead of panicking (none of ours can be one).
    let env: Env = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let flags = RankFlags {
        rank: args.rank,
        world_size: args.world_size,
        local_rank: args.local_rank,
    };
    let info = distributed::discover(&flags, &env)?;
    let distributed = (info.world_size > 1).then(|| {
        let argv: Vec<String> = std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        RankSetup {
            host: done::host_name(&env),
            visible_devices: env.get("CUDA_VISIBLE_DEVICES").cloned(),
            wait_timeout: Duration::from_secs(args.wait_timeout),
            command: command::launch_command(&argv),
            info,
        }
    });

    let interrupted = interrupt::install(context.quiet, "finishing the batch in flight and saving");
    let facts = probe_system();
    let options = RunOptions {
        fresh: args.fresh,
        interrupted,
        quiet: context.quiet,
        distributed,
        console: context.console.clone(),
    };
    baseline::run(&context.config, &facts, &context.cuda, &options)
}
