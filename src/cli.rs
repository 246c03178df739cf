//! Command-line arguments (clap). Parsing only: `commands` runs them, `config` merges them with the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vlmrun",
    version,
    about = "Rust-native GPU harness for vision-language models (BLIP captioning)",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 internal error, 2 bad config/flags or unusable device, 3 completed with failures, 4 model error, 5 input error, 6 output error, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Run configuration file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "configs/config.yaml"
    )]
    pub config: PathBuf,
    /// Override a configuration value, e.g. --set generation.num_beams=3 (repeatable; last wins).
    #[arg(long = "set", global = true, value_name = "KEY.PATH=VALUE")]
    pub sets: Vec<String>,
    /// Device: cuda, cuda:N, cpu or auto (overrides the config).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Precision: f32, f16, bf16 or auto (overrides the config).
    #[arg(long, global = true, value_name = "PRECISION")]
    pub precision: Option<String>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the resolved configuration as YAML, with where each value came from.
    Config,
    /// Check the driver, GPUs, this build, the configured device (with a real computation) and model files.
    Doctor {
        /// Print the report as JSON (schema in docs/doctor.md).
        #[arg(long)]
        json: bool,
    },
}
