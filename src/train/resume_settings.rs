//! The settings a training checkpoint was made with (recorded in its `state.json`), and what
//! `--resume` does when they changed: each key either refuses the resume or warns, for a reason.
//!
//! Refused: what the checkpoint's state means depends on it. The data order and the epoch position
//! index the list of pairs (`data.*`, `train.eval_images`, `train.batch_size`,
//! `train.grad_accumulation`, `train.shuffle`); the optimizer moments belong to one model and
//! one set of trainable parameters (`model.source`, `train.freeze_vision`); the loss scale and the
//! rounding belong to one precision (`precision`). Continuing would train on repeated or skipped
//! pairs, or from state that belongs to another run.
//!
//! Warned: the run continues correctly but is no longer the run an uninterrupted one would have
//! been: the learning-rate schedule (`train.lr`, `min_lr`, `warmup_steps`, `epochs`, `max_steps`)
//! continues from the saved step with the new values, and AdamW's or the loss's other settings apply
//! from the next step on; a changed `seed` is not used (the data order keeps the checkpoint's).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::Config;
use crate::error::Error;

/// What a changed key does to a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Refuse,
    Warn,
}

/// Every recorded key, its verdict and why.
const KEYS: [(&str, Verdict, &str); 23] = [
    (
        "model.source",
        Verdict::Refuse,
        "the optimizer state belongs to the model it trained",
    ),
    (
        "precision",
        Verdict::Refuse,
        "the loss scale and the rounding belong to one precision",
    ),
    (
        "seed",
        Verdict::Warn,
        "the data order keeps the checkpoint's shuffle seed; the new seed is not used",
    ),
    (
        "data.source",
        Verdict::Refuse,
        "the epoch position indexes this dataset's pairs",
    ),
    (
        "data.path",
        Verdict::Refuse,
        "the epoch position indexes this dataset's pairs",
    ),
    (
        "data.limit",
        Verdict::Refuse,
        "the epoch position indexes this dataset's pairs",
    ),
    (
        "data.offset",
        Verdict::Refuse,
        "the epoch position indexes this dataset's pairs",
    ),
    (
        "train.eval_images",
        Verdict::Refuse,
        "the held-out images decide the training pairs",
    ),
    (
        "train.batch_size",
        Verdict::Refuse,
        "samples per step decide the epoch position and the data order",
    ),
    (
        "train.grad_accumulation",
        Verdict::Refuse,
        "samples per step decide the epoch position and the data order",
    ),
    (
        "train.shuffle",
        Verdict::Refuse,
        "the data order of the epoch in progress would change",
    ),
    (
        "train.freeze_vision",
        Verdict::Refuse,
        "the optimizer state covers one set of trainable parameters",
    ),
    (
        "train.lr",
        Verdict::Warn,
        "the learning-rate schedule continues from the saved step with the new value",
    ),
    (
        "train.min_lr",
        Verdict::Warn,
        "the learning-rate schedule continues from the saved step with the new value",
    ),
    (
        "train.warmup_steps",
        Verdict::Warn,
        "the learning-rate schedule continues from the saved step with the new value",
    ),
    (
        "train.epochs",
        Verdict::Warn,
        "the run's length and its cosine schedule change from the saved step on",
    ),
    (
        "train.max_steps",
        Verdict::Warn,
        "the run's length and its cosine schedule change from the saved step on",
    ),
    (
        "train.weight_decay",
        Verdict::Warn,
        "AdamW applies the new value from the next step",
    ),
    (
        "train.beta1",
        Verdict::Warn,
        "AdamW's moments were averaged with the old value",
    ),
    (
        "train.beta2",
        Verdict::Warn,
        "AdamW's moments were averaged with the old value",
    ),
    (
        "train.eps",
        Verdict::Warn,
        "AdamW applies the new value from the next step",
    ),
    (
        "train.max_grad_norm",
        Verdict::Warn,
        "gradients are clipped differently from the next step",
    ),
    (
        "train.label_smoothing",
        Verdict::Warn,
        "the loss changes from the next step",
    ),
];

/// Keys that change the loss targets; warned too (a prompt or length change retrains on other text).
const TEXT_KEYS: [(&str, &str); 2] = [
    (
        "train.prompt",
        "the caption tokens the loss sees change from the next step",
    ),
    (
        "train.max_tokens",
        "the caption tokens the loss sees change from the next step",
    ),
];

/// The recorded settings of a run: every key above, as JSON values, `precision` the resolved compute
/// dtype (`f32`, `bf16`, `f16`).
pub fn record(config: &Config, precision: &str) -> BTreeMap<String, Value> {
    let train = &config.train;
    let data = &config.data;
    let pairs: [(&str, Value); 25] = [
        ("model.source", Value::from(config.model.source.clone())),
        ("precision", Value::from(precision)),
        ("seed", Value::from(config.seed)),
        ("data.source", json(&data.source)),
        ("data.path", Value::from(data.path.display().to_string())),
        ("data.limit", json(&data.limit)),
        ("data.offset", Value::from(data.offset)),
        ("train.eval_images", Value::from(train.eval_images)),
        ("train.batch_size", Value::from(train.batch_size)),
        (
            "train.grad_accumulation",
            Value::from(train.grad_accumulation),
        ),
        ("train.shuffle", Value::from(train.shuffle)),
        ("train.freeze_vision", Value::from(train.freeze_vision)),
        ("train.lr", Value::from(train.lr)),
        ("train.min_lr", Value::from(train.min_lr)),
        ("train.warmup_steps", Value::from(train.warmup_steps)),
        ("train.epochs", Value::from(train.epochs)),
        ("train.max_steps", json(&train.max_steps)),
        ("train.weight_decay", Value::from(train.weight_decay)),
        ("train.beta1", Value::from(train.beta1)),
        ("train.beta2", Value::from(train.beta2)),
        ("train.eps", Value::from(train.eps)),
        ("train.max_grad_norm", Value::from(train.max_grad_norm)),
        ("train.label_smoothing", Value::from(train.label_smoothing)),
        ("train.prompt", Value::from(train.prompt.clone())),
        ("train.max_tokens", Value::from(train.max_tokens)),
    ];
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

/// A config value as JSON (these types always serialise; `Null` if one ever did not).
fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// One key whose value differs between the checkpoint and this run.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub old: Value,
    pub new: Value,
    pub verdict: Verdict,
    pub why: &'static str,
}

/// The keys that differ, in the order of [`KEYS`]; a key the checkpoint did not record is not a
/// change (checkpoints written before settings were recorded resume as they did).
pub fn changes(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<Change> {
    let rules = KEYS.iter().copied().chain(
        TEXT_KEYS
            .iter()
            .map(|(key, why)| (*key, Verdict::Warn, *why)),
    );
    rules
        .filter_map(|(key, verdict, why)| {
            let (before, after) = (old.get(key)?, new.get(key)?);
            (before != after).then(|| Change {
                key: key.to_string(),
                old: before.clone(),
                new: after.clone(),
                verdict,
                why,
            })
        })
        .collect()
}

/// Refuses a resume of `checkpoint` when a refused key changed (naming every refused key), else
/// warns once per warned key.
pub fn check(
    checkpoint: &Path,
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> Result<(), Error> {
    let changed = changes(old, new);
    let line = |change: &Change| {
        format!(
            "{}: {} -> {} ({})",
            change.key, change.old, change.new, change.why
        )
    };
    let refused: Vec<String> = changed
        .iter()
        .filter(|c| c.verdict == Verdict::Refuse)
        .map(line)
        .collect();
    if !refused.is_empty() {
        return Err(Error::Usage(format!(
            "cannot resume {} with other settings; {} key(s) changed that the checkpoint depends on:\n  {}\n  fix: resume with the checkpoint's settings (its state.json lists them), or start over with --fresh (or another output.dir)",
            checkpoint.display(),
            refused.len(),
            refused.join("\n  ")
        )));
    }
    for change in changed.iter().filter(|c| c.verdict == Verdict::Warn) {
        tracing::warn!("resuming {} with {}", checkpoint.display(), line(change));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recorded_key_has_a_rule_and_the_verdicts_follow_the_table() {
        let base = record(&Config::default(), "f32");
        let ruled: Vec<&str> = KEYS
            .iter()
            .map(|(key, _, _)| *key)
            .chain(TEXT_KEYS.iter().map(|(key, _)| *key))
            .collect();
        for key in base.keys() {
            assert!(ruled.contains(&key.as_str()), "{key} has no rule");
        }
        assert!(changes(&base, &base).is_empty());

        let mut config = Config::default();
        config.train.lr = 3e-4;
        config.train.batch_size = 8;
        let changed = changes(&base, &record(&config, "bf16"));
        let summary: Vec<(&str, Verdict)> = changed
            .iter()
            .map(|c| (c.key.as_str(), c.verdict))
            .collect();
        assert_eq!(
            summary,
            [
                ("precision", Verdict::Refuse),
                ("train.batch_size", Verdict::Refuse),
                ("train.lr", Verdict::Warn)
            ]
        );
        let err = check(Path::new("ckpt"), &base, &record(&config, "bf16"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 key(s) changed"), "{err}");
        assert!(err.contains("train.batch_size: 32 -> 8"), "{err}");
        assert!(
            !err.contains("train.lr"),
            "warned keys are not in the refusal: {err}"
        );

        // Only warned keys: the resume goes ahead.
        let mut lr_only = Config::default();
        lr_only.train.lr = 3e-4;
        assert!(check(Path::new("ckpt"), &base, &record(&lr_only, "f32")).is_ok());
        // A checkpoint that recorded nothing resumes as before.
        assert!(check(Path::new("ckpt"), &BTreeMap::new(), &base).is_ok());
    }
}
