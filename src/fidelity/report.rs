//! The markdown table `vlmrun fidelity` prints: one row per variant.

use super::FidelityDocument;

const MIB: f64 = 1024.0 * 1024.0;

/// The table: agreement per decoding setting, first-step logit errors, weights and peak memory
/// (NVML's, and what the variant added to the memory held before it loaded).
pub fn markdown(doc: &FidelityDocument) -> String {
    let beams = &doc.settings.beams;
    let setting = |b: usize| {
        if b == 1 {
            "greedy".to_string()
        } else {
            format!("beam {b}")
        }
    };
    let mut header = vec!["variant".to_string()];
    for &b in beams {
        header.push(format!("{} exact %", setting(b)));
        header.push(format!("{} tokens %", setting(b)));
    }
    header.extend(
        [
            "step-1 logits max abs err",
            "mean abs err",
            "step-1 top-1 same",
            "weights MiB",
            "peak GPU MiB",
            "added GPU MiB",
        ]
        .map(String::from),
    );
    let mut out = format!(
        "Agreement with {} (dense weights) on {} images, prompt {:?}, max_length {}, batch {}\n\n",
        doc.reference.label,
        doc.image_ids.len(),
        doc.settings.prompt,
        doc.settings.max_length,
        doc.settings.batch_size
    );
    if !doc.left_out.is_empty() {
        let ids: Vec<&str> = doc.left_out.iter().map(|l| l.id.as_str()).collect();
        out.push_str(&format!(
            "{} dataset item(s) left out, not compared (reasons in the JSON document's left_out): {}\n\n",
            ids.len(),
            ids.join(", ")
        ));
    }
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    let mib =
        |bytes: Option<u64>| bytes.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / MIB));
    let err = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{e:.3e}"));
    out.push_str(&format!(
        "| {} (reference) |{} - | - | - | {} | {} | {} |\n",
        doc.reference.label,
        " 100.0 | 100.0 |".repeat(beams.len()),
        mib(Some(doc.reference.weight_bytes)),
        mib(doc.reference.peak_gpu_bytes),
        mib(doc.reference.added_gpu_bytes())
    ));
    for variant in &doc.variants {
        let mut row = vec![variant.run.label.clone()];
        for decoding in &variant.decoding {
            row.push(format!("{:.1}", decoding.agreement.exact_sequence_pct));
            row.push(format!("{:.1}", decoding.agreement.token_agreement_pct));
        }
        let logits = &variant.step1_logits;
        row.push(err(logits.max_abs_error));
        row.push(err(logits.mean_abs_error));
        row.push(format!("{}/{}", logits.top1_agreement, doc.image_ids.len()));
        row.push(mib(Some(variant.run.weight_bytes)));
        row.push(mib(variant.run.peak_gpu_bytes));
        row.push(mib(variant.run.added_gpu_bytes()));
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}
