//! Markdown views of bench documents: the results table, the ratio table against a reference
//! (vlmrun / PyTorch), and the regression report of `--compare`.

use super::compare::{Better, Comparison};
use super::document::{BenchDocument, Record};

const GIB: f64 = (1u64 << 30) as f64;

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn gib(bytes: Option<u64>) -> String {
    opt(bytes.map(|b| b as f64 / GIB), 2)
}

/// Heading line and the results table of `doc`.
pub fn results(doc: &BenchDocument) -> String {
    let env = &doc.environment;
    let settings = &doc.settings;
    let what = if doc.records.is_empty() && doc.train.is_some() {
        "training".to_string()
    } else {
        format!(
            "{} tokens forced, prompt {:?}",
            settings.generated_tokens, settings.prompt
        )
    };
    let mut out = format!(
        "## {} bench: {} ({}), {}, {what}\n\n",
        doc.tool, env.device_name, env.device, env.precision,
    );
    out.push_str(&format!(
        "model: vision {} layers of width {}, text {} layers of width {}, image {} px; warm-up {}, iterations {}\n",
        doc.model.vision_layers,
        doc.model.vision_hidden_size,
        doc.model.text_layers,
        doc.model.text_hidden_size,
        doc.model.image_size,
        settings.warmup,
        settings.iterations
    ));
    if let Some(load) = doc.model_load_s {
        out.push_str(&format!("model load: {load:.3} s\n"));
    }
    if let Some(p) = &doc.preprocess {
        out.push_str(&format!(
            "preprocess ({}): {:.2} ms median, {:.1} images/s on one thread\n",
            p.input, p.ms.p50, p.images_per_s_one_thread
        ));
    }
    out.push('\n');
    if let Some(t) = &doc.train {
        out.push_str(&format!(
            "training ({} pairs; backward {}, fused kernels {}, gradient checkpointing {}):\n\n",
            t.training_pairs, t.backward, t.fused_kernels, t.gradient_checkpointing
        ));
        out.push_str(
            "| batch | accumulation | steps | samples/s | step ms | startup s | peak GPU GiB |\n",
        );
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2} | {} |\n",
            t.batch_size,
            t.grad_accumulation,
            t.steps,
            t.samples_per_s,
            t.step_ms,
            t.startup_s,
            gib(t.peak_gpu_bytes)
        ));
        if doc.records.is_empty() {
            return out;
        }
        out.push('\n');
    }
    out.push_str(
        "| batch | beams | images/s | latency p50 ms | p95 ms | upload ms | vision ms | vision images/s | prefill ms | decode step ms | step in generate ms | peak GPU GiB |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &doc.records {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.batch_size,
            r.num_beams,
            r.images_per_s,
            r.latency_ms.p50,
            r.latency_ms.p95,
            opt(r.upload_ms, 3),
            opt(r.vision_ms, 3),
            opt(r.vision_images_per_s, 1),
            opt(r.prefill_ms, 3),
            opt(r.decode_step_ms, 3),
            opt(r.decode_step_in_generate_ms, 3),
            gib(r.peak_gpu_bytes),
        ));
    }
    out
}

/// `current / reference` for every (batch, beams) both have: images/s, vision images/s, peak memory.
pub fn ratios(current: &BenchDocument, reference: &BenchDocument) -> String {
    let mut out = format!(
        "## {} / {} ({}, {})\n\n",
        current.tool,
        reference.tool,
        current.environment.device_name,
        current.environment.precision
    );
    if current.environment.device_name != reference.environment.device_name
        || current.environment.precision != reference.environment.precision
    {
        out.push_str(&format!(
            "warning: the reference ran on {} in {}: the ratios compare different setups\n\n",
            reference.environment.device_name, reference.environment.precision
        ));
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    };
    out.push_str(&format!(
        "| batch | beams | images/s {c} | images/s {r} | ratio | vision images/s {c} | vision {r} | ratio | peak GiB {c} | peak GiB {r} | ratio |\n",
        c = current.tool,
        r = reference.tool
    ));
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut matched = 0;
    for c in &current.records {
        let Some(r) = reference.record(c.batch_size, c.num_beams) else {
            continue;
        };
        matched += 1;
        let bytes = |rec: &Record| rec.peak_gpu_bytes.map(|b| b as f64);
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.batch_size,
            c.num_beams,
            c.images_per_s,
            r.images_per_s,
            ratio(Some(c.images_per_s), Some(r.images_per_s)),
            opt(c.vision_images_per_s, 1),
            opt(r.vision_images_per_s, 1),
            ratio(c.vision_images_per_s, r.vision_images_per_s),
            gib(c.peak_gpu_bytes),
            gib(r.peak_gpu_bytes),
            ratio(bytes(c), bytes(r)),
        ));
    }
    if matched == 0 {
        out.push_str("(no (batch, beams) in common)\n");
    }
    let measures = (
        current.settings.peak_gpu_measure.as_deref(),
        reference.settings.peak_gpu_measure.as_deref(),
    );
    if let (Some(c), Some(r)) = measures {
        if c != r {
            out.push_str(&format!(
                "\npeak memory is measured differently: {} {c}, {} {r}\n",
                current.tool, reference.tool
            ));
        }
    }
    out
}

/// Every checked metric, and a verdict line.
pub fn comparison(comparison: &Comparison) -> String {
    let percent = comparison.threshold * 100.0;
    let mut out = format!("## regression check (threshold {percent:.1}%)\n\n");
    out.push_str("| metric | baseline | this run | change | |\n|---|---:|---:|---:|---|\n");
    for m in &comparison.metrics {
        // Shown as the signed change of the value itself.
        let change = match m.better {
            Better::Higher => -m.worse_by,
            Better::Lower => m.worse_by,
        } * 100.0;
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {change:+.1}% | {} |\n",
            m.metric,
            m.baseline,
            m.current,
            if m.regressed { "REGRESSED" } else { "ok" }
        ));
    }
    for (b, k) in &comparison.only_current {
        out.push_str(&format!("\nbatch {b}, beams {k}: not in the baseline\n"));
    }
    for (b, k) in &comparison.only_baseline {
        out.push_str(&format!(
            "\nbatch {b}, beams {k}: in the baseline, not run\n"
        ));
    }
    let regressed: Vec<&str> = comparison
        .regressions()
        .map(|m| m.metric.as_str())
        .collect();
    if regressed.is_empty() {
        out.push_str(&format!(
            "\nno regression beyond {percent:.1}% ({} metrics checked)\n",
            comparison.metrics.len()
        ));
    } else {
        out.push_str(&format!(
            "\n{} metric(s) regressed beyond {percent:.1}%: {}\n",
            regressed.len(),
            regressed.join("; ")
        ));
    }
    out
}
