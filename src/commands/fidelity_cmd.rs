//! `vlmrun fidelity`: compares the requested variants with the f32 reference (see
//! `crate::fidelity`), writes the JSON document atomically and prints the markdown table.

use super::{print_stdout, Context};
use crate::cli::FidelityArgs;
use crate::device::{self, probe_system};
use crate::error::Error;
use crate::exit::Exit;
use crate::fidelity::{self, report, variant::Variant, FidelityPlan};
use crate::report::write_json_atomic;

/// Default file name of the document in `output.dir`.
pub const DEFAULT_OUT_FILE: &str = "fidelity.json";

pub fn run(context: &Context, args: &FidelityArgs) -> Result<Exit, Error> {
    let config = &context.config.config;
    if args.limit == Some(0) {
        // Zero images would report 100% agreement on nothing.
        return Err(Error::Usage(
            "fidelity --limit 0: must be at least 1 (the number of dataset images compared)\n  fix: leave --limit out to compare every image, or give a positive count".to_string(),
        ));
    }
    let variants = args
        .variants
        .iter()
        .map(|spec| {
            Variant::parse(spec).map_err(|reason| {
                Error::Usage(format!(
                    "--variants {spec}: {reason}\n  fix: e.g. --variants f16,bf16,q8_0,q4k@bf16,q4_0:weight-only"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| config.output.dir.join(DEFAULT_OUT_FILE));
    if let Some(parent) = out_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Output {
            what: "the fidelity document",
            path: out_path.clone(),
            source,
        })?;
    }
    let plan = FidelityPlan {
        variants,
        beams: args.beams.clone(),
        limit: args.limit,
    };
    let facts = probe_system();
    let active = device::activate(config.device, config.precision, &facts, &context.cuda)?;
    let document = fidelity::run(
        &context.config,
        &active,
        &facts,
        &context.cuda,
        &plan,
        !context.quiet,
    )?;
    write_json_atomic(&out_path, &document).map_err(|source| Error::Output {
        what: "the fidelity document",
        path: out_path.clone(),
        source,
    })?;
    print_stdout(&report::markdown(&document))?;
    // Items left out are named in the document and on stderr; the run is not a full success.
    if document.left_out.is_empty() {
        Ok(Exit::Success)
    } else {
        Ok(Exit::CompletedWithFailures)
    }
}
