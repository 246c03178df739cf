//! The `vlmrun` binary: starts the CUDA build when this is the CPU build and the CUDA one can run here,
//! sets up logging, runs the command, prints `error: ...` once and exits with the documented code.

use std::process::ExitCode;

use clap::Parser;
use vlmrun::cli::Cli;
use vlmrun::device::{self, launcher};

fn main() -> ExitCode {
    if launcher::is_loader_probe() {
        // Started by the CPU build only to see whether the dynamic loader accepts this binary.
        return ExitCode::SUCCESS;
    }
    let launcher_result = if device::build_info::cuda_build().is_none() {
        Some(launcher::launch_companion_or_explain())
    } else {
        None
    };
    let cuda = device::cuda_availability(launcher_result);

    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    // `--set` on both sides of the subcommand: clap keeps one side's only (see `sets_in_order`).
    let every_set = vlmrun::cli::sets_in_order(std::env::args_os().skip(1));
    if every_set.len() > cli.global.sets.len() {
        cli.global.sets = every_set;
    }
    let console = vlmrun::report::console::Console::stderr();
    init_logging(cli.global.verbose, cli.global.quiet, console.clone());
    match vlmrun::commands::run(cli, cuda, console) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let code = err.exit().code();
            eprintln!("error: {}", vlmrun::error::render(&err));
            ExitCode::from(code)
        }
    }
}

/// Log lines go to stderr through `console` (above the progress bar while one is drawn). Filter: `VLMRUN_LOG`, else `RUST_LOG` (both in tracing's EnvFilter syntax,
/// e.g. `debug` or `vlmrun=debug,hf_hub=info`), else `-v`/`-vv`/`--quiet`. Colour only on a terminal
/// and never when `NO_COLOR` is set to anything non-empty (https://no-color.org).
fn init_logging(verbose: u8, quiet: bool, console: vlmrun::report::console::Console) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let from_env = ["VLMRUN_LOG", "RUST_LOG"].into_iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| (name, value))
    });
    let mut bad_filter = None;
    let filter = match from_env {
        Some((name, value)) => match tracing_subscriber::EnvFilter::try_new(&value) {
            Ok(filter) => filter,
            Err(err) => {
                bad_filter = Some(format!(
                    "{name}={value} is not a log filter ({err}); using the default"
                ));
                tracing_subscriber::EnvFilter::new(format!("vlmrun={level}"))
            }
        },
        None => tracing_subscriber::EnvFilter::new(format!("vlmrun={level}")),
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(console)
        .with_ansi(!no_color && terminal)
        .with_target(false);
    // Where stderr is a log file (CI, Slurm), lines carry the UTC time as the progress lines do.
    if terminal {
        builder.without_time().init();
    } else {
        builder.with_timer(UtcSeconds).init();
    }
    if let Some(message) = bad_filter {
        tracing::warn!("{message}");
    }
}

/// The log lines' time where stderr is not a terminal: UTC, to the second, as the progress lines.
struct UtcSeconds;

impl tracing_subscriber::fmt::time::FormatTime for UtcSeconds {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&vlmrun::report::console::utc_timestamp(
            std::time::SystemTime::now(),
        ))
    }
}
