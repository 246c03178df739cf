//! `vlmrun bench`: measures (see `crate::bench`; with `--train`, steps of the training job), writes the JSON document atomically, prints the
//! markdown tables on stdout, optionally draws the SVG plot, and with `--compare` exits 3 naming every
//! metric that regressed beyond `--threshold` (2 when the baseline was taken on another device or
//! with other settings, 5 when it cannot be read).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{print_stdout, Context};
use crate::bench::document::{BenchDocument, ModelShape, Settings, TrainRecord, SCHEMA};
use crate::bench::{self, compare, markdown, plot, BenchError, BenchPlan};
use crate::cli::BenchArgs;
use crate::config::BackwardPass;
use crate::device::{self, probe_system, ActiveDevice, SystemFacts};
use crate::error::Error;
use crate::exit::Exit;
use crate::models::blip::BlipConfig;
use crate::models::linear::QuantizedMatmul;
use crate::report::output::lock_output_dir;
use crate::report::write_json_atomic;
use crate::train::{self, prepare::TrainOptions};

/// Default file name of the document in `output.dir`.
pub const DEFAULT_OUT_FILE: &str = "bench.json";

pub fn run(context: &Context, args: &BenchArgs) -> Result<Exit, Error> {
    let config = &context.config.config;
    // Everything that can be refused cheaply is checked before measuring.
    let threshold = compare::parse_threshold(&args.threshold).map_err(to_error)?;
    let baseline = args
        .compare
        .as_deref()
        .map(compare::read_document)
        .transpose()
        .map_err(to_error)?;
    let reference = args
        .reference
        .as_deref()
        .map(compare::read_document)
        .transpose()
        .map_err(to_error)?;
    let quantized_matmul = args
        .quantized_matmul
        .as_deref()
        .map(|name| {
            QuantizedMatmul::from_name(name).ok_or_else(|| {
                to_error(BenchError::Settings(format!(
                    "--quantized-matmul {name}: expected one of {}",
                    QuantizedMatmul::names()
                )))
            })
        })
        .transpose()?;
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    if let Some(baseline) = &baseline {
        let here = crate::report::device_name(&active);
        if baseline.environment.device_name != here {
            return Err(to_error(BenchError::DeviceMismatch {
                baseline: baseline.environment.device_name.clone(),
                current: here,
            }));
        }
    }
    let plan = BenchPlan {
        batch_sizes: non_empty_or(&args.batch_sizes, config.generation.batch_size),
        beams: non_empty_or(&args.beams, config.generation.num_beams),
        generated_tokens: args.tokens,
        warmup: args.warmup,
        iterations: args.iterations,
        quantized_matmul,
    };
    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| config.output.dir.join(DEFAULT_OUT_FILE));
    ensure_parent(&out_path)?;
    if let Some(plot_path) = &args.plot {
        ensure_parent(plot_path)?;
    }

    let document = if args.train {
        train_document(context, &active, &facts, args.train_steps)?
    } else {
        bench::run(
            &context.config,
            &active,
            &facts,
            &context.cuda,
            &plan,
            !context.quiet,
        )
        .map_err(to_error)?
    };
    write_json_atomic(&out_path, &document).map_err(|source| Error::Output {
        what: "the bench document",
        path: out_path.clone(),
        source,
    })?;

    if !context.quiet {
        if let Some(dir) = &document.environment.model_dir {
            eprintln!(
                "bench {}",
                crate::models::label::model_line(&config.model.source, Path::new(dir))
            );
        }
    }
    let mut text = markdown::results(&document);
    if let Some(reference) = &reference {
        text.push('\n');
        text.push_str(&markdown::ratios(&document, reference));
    }
    if let Some(plot_path) = &args.plot {
        plot::write_svg(plot_path, &document, reference.as_ref()).map_err(to_error)?;
    }
    let comparison = baseline
        .as_ref()
        .map(|baseline| compare::compare(baseline, &document, threshold))
        .transpose()
        .map_err(to_error)?;
    if let Some(comparison) = &comparison {
        text.push('\n');
        text.push_str(&markdown::comparison(comparison));
    }
    print_stdout(&text)?;
    if !context.quiet {
        eprintln!("bench: wrote {}", out_path.display());
    }
    match comparison {
        Some(comparison) if comparison.has_regressions() => {
            for metric in comparison.regressions() {
                eprintln!(
                    "regression: {} {:.4} -> {:.4} ({:.1}% worse, threshold {:.1}%)",
                    metric.metric,
                    metric.baseline,
                    metric.current,
                    metric.worse_by * 100.0,
                    comparison.threshold * 100.0
                );
            }
            Ok(Exit::CompletedWithFailures)
        }
        _ => Ok(Exit::Success),
    }
}

/// `vlmrun bench --train`: `steps` optimizer steps of the training job in OUTPUT_DIR/bench-train
/// (fresh, no checkpoints, no evaluation), as a document holding one training record.
fn train_document(
    context: &Context,
    active: &ActiveDevice,
    facts: &SystemFacts,
    steps: usize,
) -> Result<BenchDocument, Error> {
    if steps < 2 {
        return Err(Error::Usage(format!(
            "--train-steps {steps}: needs at least 2 (the first step is not timed)"
        )));
    }
    let mut resolved = context.config.clone();
    let config = &mut resolved.config;
    let dir = config.output.dir.join("bench-train");
    config.output.dir = dir.clone();
    config.train.max_steps = Some(steps);
    config.train.eval_images = 0;
    config.train.eval_every = 0;
    let _lock = lock_output_dir(&dir)?;
    let options = TrainOptions {
        resume: false,
        fresh: true,
        interrupted: Arc::new(AtomicBool::new(false)),
        quiet: context.quiet,
        plot: None,
        dump_grads: None,
        checkpoints: false,
        console: context.console.clone(),
    };
    let (_, summary) = train::run::run_measured(&resolved, facts, &context.cuda, &options)?;
    let config = &resolved.config;
    let samples_per_s = summary
        .samples_per_s
        .ok_or_else(|| Error::Internal("the training bench ran no step".into()))?;
    let model_config = summary.base_model.join("config.json");
    let text = std::fs::read_to_string(&model_config)
        .map_err(|err| Error::Model(format!("reading {}: {err}", model_config.display())))?;
    let shape = BlipConfig::from_json_str(&text)
        .map(|c| ModelShape::of(&c))
        .map_err(|err| Error::Model(format!("{}: {err}", model_config.display())))?;
    let train = &config.train;
    Ok(BenchDocument {
        schema: SCHEMA.to_string(),
        tool: "vlmrun".to_string(),
        environment: crate::report::describe_environment(
            active,
            facts,
            &context.cuda,
            config,
            Some(summary.base_model.display().to_string()),
        ),
        model: shape,
        settings: Settings {
            batch_sizes: vec![train.batch_size],
            beams: Vec::new(),
            prompt: train.prompt.clone(),
            prompt_tokens: 0,
            generated_tokens: 0,
            forced_length: 0,
            warmup: 1,
            iterations: summary.steps.saturating_sub(1) as usize,
            peak_gpu_measure: Settings::vlmrun_peak_gpu_measure(active),
            quantized_matmul: None,
        },
        model_load_s: None,
        preprocess: None,
        records: Vec::new(),
        train: Some(TrainRecord {
            batch_size: train.batch_size,
            grad_accumulation: train.grad_accumulation,
            backward: match train.backward {
                BackwardPass::Explicit => "explicit",
                BackwardPass::Autograd => "autograd",
            }
            .to_string(),
            fused_kernels: train.fused_kernels,
            gradient_checkpointing: train.gradient_checkpointing,
            steps: summary.steps,
            samples_per_s,
            step_ms: 1e3 * summary.samples_per_step as f64 / samples_per_s.max(1e-9),
            startup_s: summary.startup_s,
            peak_gpu_bytes: summary.peak_gpu_bytes,
            training_pairs: summary.training_pairs,
        }),
        config: serde_json::to_value(config)
            .map_err(|err| Error::Internal(format!("serialising the config: {err}")))?,
    })
}

fn non_empty_or(values: &[usize], default: usize) -> Vec<usize> {
    if values.is_empty() {
        vec![default]
    } else {
        values.to_vec()
    }
}

/// Creates the directory `path` will be written in.
fn ensure_parent(path: &Path) -> Result<(), Error> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|source| Error::Output {
            what: "the bench output directory",
            path: dir.to_path_buf(),
            source,
        }),
        None => Ok(()),
    }
}

/// Maps a bench error onto the command's exit codes.
fn to_error(err: BenchError) -> Error {
    match err {
        BenchError::Hub(hub) => Error::Hub(hub),
        BenchError::Model(_) => Error::Model(err.to_string()),
        BenchError::Settings(_)
        | BenchError::Threshold { .. }
        | BenchError::DeviceMismatch { .. }
        | BenchError::SettingsMismatch { .. }
        | BenchError::NoCommonRecords { .. } => Error::Usage(err.to_string()),
        BenchError::ReadDocument { .. } | BenchError::BadDocument { .. } => {
            Error::Input(err.to_string())
        }
        BenchError::Plot { ref path, .. } => Error::Output {
            what: "the plot",
            path: PathBuf::from(path),
            source: std::io::Error::other(err.to_string()),
        },
        BenchError::Compute { .. }
        | BenchError::Generate(_)
        | BenchError::ForcedTokens { .. }
        | BenchError::Internal(_) => Error::Internal(err.to_string()),
    }
}
