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

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    match vlmrun::commands::run(cli, cuda) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            let code = err.exit().code();
            eprintln!("error: {:#}", anyhow::Error::new(err));
            ExitCode::from(code)
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VLMRUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vlmrun={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
}
