//! `vlmrun bench`: measures (see `crate::bench`), writes the JSON document atomically, prints the
//! markdown tables on stdout, optionally draws the SVG plot, and with `--compare` exits 3 naming every
//! metric that regressed beyond `--threshold` (2 when the baseline was taken on another device or
//! with other settings, 5 when it cannot be read).

use std::path::{Path, PathBuf};

use super::{print_stdout, Context};
use crate::bench::{self, compare, markdown, plot, BenchError, BenchPlan};
use crate::cli::BenchArgs;
use crate::device::{self, probe_system};
use crate::error::Error;
use crate::exit::Exit;
use crate::models::linear::QuantizedMatmul;
use crate::report::write_json_atomic;

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

    let document = bench::run(
        &context.config,
        &active,
        &facts,
        &context.cuda,
        &plan,
        !context.quiet,
    )
    .map_err(to_error)?;
    write_json_atomic(&out_path, &document).map_err(|source| Error::Output {
        what: "the bench document",
        path: out_path.clone(),
        source,
    })?;

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
