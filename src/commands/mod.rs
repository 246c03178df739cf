//! Runs a parsed command line: resolves the configuration once, then hands it to the subcommand.

mod baseline_cmd;
mod bench_cmd;
mod caption_cmd;
mod config_cmd;
mod doctor_cmd;
mod embed_cmd;
mod fetch_cmd;
mod fidelity_cmd;
mod interrupt;
mod matching;
mod merge_cmd;
mod quantize_cmd;
mod score_cmd;
mod train_cmd;
mod vqa;
mod vqa_dataset;

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigRequest};
use crate::device::CudaAvailability;
use crate::error::Error;
use crate::exit::Exit;
use crate::report::console::Console;

/// Everything a subcommand gets: the resolved configuration and what the launcher found about CUDA.
pub struct Context {
    pub config: config::ResolvedConfig,
    pub cuda: CudaAvailability,
    /// `--quiet`: no progress or summary on stderr.
    pub quiet: bool,
    /// stderr, shared by the logger and the progress bars.
    pub console: crate::report::console::Console,
}

/// Runs `cli`; returns the exit status of a command that finished (errors are returned, not printed).
pub fn run(cli: Cli, cuda: CudaAvailability, console: Console) -> Result<Exit, Error> {
    // Needs no configuration: works even where the config file is broken.
    if let Command::Completions { shell } = cli.command {
        return completions(shell);
    }
    let flags = match &cli.command {
        Command::Caption(args) => args.overrides(),
        Command::Vqa(args) => args.overrides(),
        Command::Match(args) => args.overrides(),
        Command::Embed(args) => args.overrides(),
        Command::Baseline(args) => args.overrides(),
        Command::Bench(args) => args.overrides(),
        Command::Train(args) => args.overrides(),
        Command::Quantize(args) => args.overrides(),
        Command::Fidelity(args) => args.overrides(),
        _ => Vec::new(),
    };
    let request = ConfigRequest {
        file: cli.global.config.clone(),
        env_file: std::env::var_os(config::CONFIG_VAR)
            .filter(|value| !value.is_empty())
            .map(std::path::PathBuf::from),
        sets: cli.global.sets.clone(),
        flags,
        device: cli.global.device.clone(),
        precision: cli.global.precision.clone(),
    };
    let context = Context {
        config: config::resolve(&request)?,
        cuda,
        quiet: cli.global.quiet,
        console,
    };
    let runs_a_model = matches!(
        cli.command,
        Command::Caption(_)
            | Command::Vqa(_)
            | Command::Match(_)
            | Command::Embed(_)
            | Command::Baseline(_)
            | Command::Bench(_)
            | Command::Train(_)
            | Command::Quantize(_)
            | Command::Fidelity(_)
    );
    if runs_a_model || matches!(cli.command, Command::Doctor { .. }) {
        unpack_builtin_files(&context.config.config)?;
    }
    if runs_a_model {
        download_model(&context)?;
    }
    match cli.command {
        Command::Config => config_cmd::run(&context),
        Command::Doctor { json } => doctor_cmd::run(&context, json),
        Command::Caption(args) => {
            let images = match args.limit {
                Some(limit) => &args.images[..limit.min(args.images.len())],
                None => &args.images[..],
            };
            caption_cmd::run(&context, images, args.json)
        }
        Command::Vqa(args) => {
            let images = match args.limit {
                Some(limit) => &args.images[..limit.min(args.images.len())],
                None => &args.images[..],
            };
            vqa_command(&context, &args, images)
        }
        Command::Match(args) => {
            let images = match args.limit {
                Some(limit) => &args.images[..limit.min(args.images.len())],
                None => &args.images[..],
            };
            matching::run(&context, images, &args.text, args.enc, args.json)
        }
        Command::Embed(args) => {
            let texts = embed_cmd::collect_texts(&args.text, args.texts.as_deref())?;
            embed_cmd::run(
                &context,
                &embed_cmd::EmbedRequest {
                    images: &args.images,
                    texts,
                    out: &args.out,
                },
            )
        }
        Command::Completions { .. } => Ok(Exit::Success),
        Command::Baseline(args) => baseline_cmd::run(&context, &args),
        Command::Merge { output } => merge_cmd::run(&context, output.as_deref()),
        Command::Bench(args) => bench_cmd::run(&context, &args),
        Command::Fetch { id, revision } => fetch_cmd::run(&context, &id, &revision),
        Command::Train(args) => train_cmd::run(&context, &args),
        Command::Quantize(args) => quantize_cmd::run(&context, &args),
        Command::Fidelity(args) => fidelity_cmd::run(&context, &args),
        Command::Score {
            predictions,
            references,
            json,
        } => score_cmd::run(&context, &predictions, &references, json),
    }
}

/// `vlmrun vqa`: questions about images given on the command line, or a VQAv2 questions file.
fn vqa_command(
    context: &Context,
    args: &crate::cli::VqaArgs,
    images: &[String],
) -> Result<Exit, Error> {
    let ground_truth = match args.ground_truth.as_str() {
        "official" => crate::metrics::vqa::GroundTruth::Official,
        "full" => crate::metrics::vqa::GroundTruth::Full,
        other => {
            return Err(Error::Usage(format!(
                "--ground-truth {other:?} is not a mode\n  fix: use official (the VQA evaluation) or full (lmms-eval)"
            )))
        }
    };
    match (&args.questions, &args.images_dir, &args.out, &args.question) {
        (Some(questions), Some(images_dir), Some(out), _) => {
            if !images.is_empty() {
                return Err(Error::Usage(
                    "IMAGE arguments and --questions exclude each other\n  fix: drop the images (they come from --images) or --questions".to_string(),
                ));
            }
            let files = vqa_dataset::DatasetRun {
                questions,
                annotations: args.annotations.as_deref(),
                images: images_dir,
                out,
                ground_truth,
                limit: args.limit,
            };
            vqa_dataset::run(context, &files)
        }
        (_, _, _, Some(question)) => vqa::run(context, images, question, args.json),
        _ => Err(Error::Usage(
            "vqa needs --question TEXT IMAGE..., or --questions FILE --images DIR --out FILE"
                .to_string(),
        )),
    }
}

/// `vlmrun completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> Result<Exit, Error> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "vlmrun", &mut script);
    print_stdout(&String::from_utf8_lossy(&script))?;
    Ok(Exit::Success)
}

/// Unpacks the demo model and the sample images when the configuration points at their built-in
/// copies (see `config::builtin`).
fn unpack_builtin_files(config: &config::Config) -> Result<(), Error> {
    if config::builtin::is_unpacked_path(std::path::Path::new(&config.model.source)) {
        config::builtin::unpack_demo_model()?;
    }
    if config::builtin::is_unpacked_path(&config.data.path) {
        config::builtin::unpack_samples()?;
    }
    Ok(())
}

/// A hub id in `model.source` whose files are not all in the cache is downloaded now (unless offline),
/// so every later lookup finds it there. Local directories and `.gguf` files are left to the loader.
fn download_model(context: &Context) -> Result<(), Error> {
    let model = &context.config.config.model;
    if crate::models::blip::gguf::is_gguf_path(std::path::Path::new(&model.source)) {
        return Ok(());
    }
    crate::hub::ensure_model(
        &model.source,
        &model.revision,
        crate::hub::Offline::from_config(model.offline),
        !context.quiet,
    )?;
    Ok(())
}

/// Writes to stdout, mapping a closed pipe to an error instead of a panic.
pub(crate) fn print_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Stdout)
}
