//! The training log: `metrics.jsonl` (one JSON object per line: a record per training step and one
//! per evaluation, flushed as written) and its loss curve as an SVG chart.
//!
//! Step records carry `step` = the number of steps completed after that update (1-based), the same
//! count as a checkpoint's `Progress::step`, so a run resumed from checkpoint step `s` keeps exactly
//! the records with `step <= s` ([`MetricsLog::open`]). Non-finite numbers (the loss or gradient norm
//! of a step skipped for f16 overflow) are written as `null`, since JSON has no inf/NaN, and read back
//! as NaN.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::predictions::{JsonlAppender, PredictionsError};
use crate::report::chart::{
    draw_line, finish_chart, label_extremes, log_axis, svg_chart, tick_label, Series, PALETTE,
};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Append(#[from] PredictionsError),

    #[error("cannot access {}: {source}\n  fix: check that the output directory is writable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: not a metrics record ({message})\n  fix: the file was edited or belongs to something else; rerun with --fresh, or use another output directory", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("cannot draw the loss curve {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed, this one included.
    pub step: u64,
    pub epoch: u64,
    /// Mean loss of the step's batch (unscaled).
    #[serde(with = "nullable_f64")]
    pub loss: f64,
    /// Learning rate the update used.
    pub lr: f64,
    /// Global gradient L2 norm before clipping (unscaled).
    #[serde(with = "nullable_f64")]
    pub grad_norm: f64,
    /// Loss scale the step ran with (1 without f16 loss scaling).
    pub loss_scale: f64,
    /// Whether the update was skipped (inf/NaN gradients under f16 loss scaling).
    pub skipped: bool,
    pub samples_per_s: f64,
    /// Seconds since the run (or the resumed run) started.
    pub elapsed_s: f64,
}

/// One evaluation, with its metrics by name (e.g. `loss`, `CIDEr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps completed when the evaluation ran.
    pub step: u64,
    pub epoch: u64,
    pub metrics: BTreeMap<String, f64>,
    pub elapsed_s: f64,
}

/// A line of `metrics.jsonl`, tagged by `"kind": "step" | "eval"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsRecord {
    Step(StepRecord),
    Eval(EvalRecord),
}

impl MetricsRecord {
    pub fn step(&self) -> u64 {
        match self {
            MetricsRecord::Step(record) => record.step,
            MetricsRecord::Eval(record) => record.step,
        }
    }
}

/// Appends records to `metrics.jsonl`.
pub struct MetricsLog {
    appender: JsonlAppender,
}

impl MetricsLog {
    /// Opens the log. `resume_step: None` starts a fresh file (an existing one is truncated);
    /// `Some(s)` keeps the records with `step <= s` (those the resumed checkpoint covers), drops the
    /// later ones and a torn last line, and appends after them.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        match resume_step {
            None => std::fs::write(path, b"").map_err(io)?,
            Some(step) => {
                let records = read_records(path)?;
                let kept: Vec<&MetricsRecord> =
                    records.iter().filter(|r| r.step() <= step).collect();
                let mut bytes = Vec::new();
                for record in kept {
                    serde_json::to_writer(&mut bytes, record)
                        .map_err(|err| io(std::io::Error::other(err)))?;
                    bytes.push(b'\n');
                }
                crate::report::write_atomic(path, &bytes).map_err(io)?;
            }
        }
        Ok(Self {
            appender: JsonlAppender::open(path)?,
        })
    }

    /// Writes one record as a line and flushes it.
    pub fn append(&mut self, record: &MetricsRecord) -> Result<(), LogError> {
        Ok(self.appender.append(std::slice::from_ref(record))?)
    }
}

/// Reads every complete record of a metrics file (a missing file is empty; a torn last line, from a
/// crash mid-write, is ignored).
pub fn read_records(path: &Path) -> Result<Vec<MetricsRecord>, LogError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LogError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let complete_len = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let complete = text.get(..complete_len).unwrap_or_default();
    let mut records = Vec::new();
    for (index, line) in complete.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record = serde_json::from_slice(line).map_err(|err| LogError::Corrupt {
            path: path.to_path_buf(),
            line: index + 1,
            message: err.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Renders the loss curve on a logarithmic loss axis that ends on labelled ticks around the data
/// (`report::chart::log_axis`): the training loss per step, its moving average, and the eval `loss`
/// points when there are any, with the lowest and highest value labelled. Skipped, non-finite and
/// non-positive losses are left out (a log axis has no zero).
pub fn render_loss_svg(records: &[MetricsRecord], title: &str) -> Result<String, String> {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|record| match record {
            MetricsRecord::Step(s) if !s.skipped && s.loss.is_finite() && s.loss > 0.0 => {
                Some((s.step as f64, s.loss))
            }
            _ => None,
        })
        .collect();
    let eval: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|record| match record {
            MetricsRecord::Eval(e) => e
                .metrics
                .get("loss")
                .filter(|loss| loss.is_finite() && **loss > 0.0)
                .map(|&loss| (e.step as f64, loss)),
            _ => None,
        })
        .collect();
    if train.is_empty() && eval.is_empty() {
        return Err("no finite loss to draw".to_string());
    }
    let window = (train.len() / 50).max(1);
    let mut lines = vec![Series {
        label: "train loss".into(),
        points: train.clone(),
        color: RGBColor(160, 190, 225),
        dashed: false,
        markers: false,
    }];
    if window > 1 {
        lines.push(Series {
            label: format!("train loss, mean of {window} steps"),
            points: moving_average(&train, window),
            color: PALETTE[0],
            dashed: false,
            markers: false,
        });
    }
    if !eval.is_empty() {
        lines.push(Series {
            label: "eval loss".into(),
            points: eval,
            color: PALETTE[1],
            dashed: true,
            markers: true,
        });
    }
    let all = lines.iter().flat_map(|line| line.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    // Logarithmic: a loss falling from 10 to 0.01 stays readable all the way down.
    let y_axis = log_axis(y_min, y_max).ok_or("no positive loss to draw")?;
    let y_range = (y_axis.low..y_axis.high)
        .log_scale()
        .with_key_points(y_axis.ticks.clone());
    svg_chart((900, 560), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0f64..x_max, y_range)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_labels(12)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| tick_label(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &lines {
            draw_line(&mut chart, line)?;
        }
        label_extremes(&mut chart, &lines, "")?;
        finish_chart(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Renders the loss curve of `records` and writes it to `path` atomically.
pub fn write_loss_svg(path: &Path, records: &[MetricsRecord], title: &str) -> Result<(), LogError> {
    let plot_error = |message: String| LogError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let svg = render_loss_svg(records, title).map_err(plot_error)?;
    crate::report::write_atomic(path, svg.as_bytes()).map_err(|err| plot_error(err.to_string()))
}

/// Trailing mean over `window` points (shorter at the start).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (index, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if index >= window {
            sum -= points.get(index - window).map_or(0.0, |p| p.1);
        }
        out.push((x, sum / (index + 1).min(window) as f64));
    }
    out
}

/// f64 fields that may be inf/NaN: written as `null`, read back as NaN.
mod nullable_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn step(step: u64, loss: f64) -> MetricsRecord {
        MetricsRecord::Step(StepRecord {
            step,
            epoch: 0,
            loss,
            lr: 1e-5,
            grad_norm: 0.5,
            loss_scale: 65536.0,
            skipped: false,
            samples_per_s: 100.0,
            elapsed_s: step as f64,
        })
    }

    fn eval(step: u64, loss: f64) -> MetricsRecord {
        MetricsRecord::Eval(EvalRecord {
            step,
            epoch: 0,
            metrics: BTreeMap::from([("loss".to_string(), loss), ("CIDEr".to_string(), 0.5)]),
            elapsed_s: 1.0,
        })
    }

    #[test]
    fn resume_keeps_the_covered_records_and_drops_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        for s in 1..=6 {
            log.append(&step(s, 3.0 - s as f64 * 0.1)).unwrap();
        }
        log.append(&eval(4, 2.7)).unwrap();
        drop(log);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"kind":"step","step":7,"lo"#).unwrap();
        drop(file);

        let mut log = MetricsLog::open(&path, Some(4)).unwrap();
        log.append(&step(5, 2.5)).unwrap();
        let records = read_records(&path).unwrap();
        let steps: Vec<u64> = records.iter().map(MetricsRecord::step).collect();
        assert_eq!(steps, [1, 2, 3, 4, 4, 5]);
        assert_eq!(records.last(), Some(&step(5, 2.5)));
        assert!(matches!(records.get(4), Some(MetricsRecord::Eval(_))));
    }

    #[test]
    fn non_finite_numbers_round_trip_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        let MetricsRecord::Step(mut record) = step(1, f64::NAN) else {
            unreachable!()
        };
        record.grad_norm = f64::INFINITY;
        record.skipped = true;
        log.append(&MetricsRecord::Step(record)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""loss":null"#) && text.contains(r#""grad_norm":null"#),
            "{text}"
        );
        let back = read_records(&path).unwrap();
        let Some(MetricsRecord::Step(back)) = back.first() else {
            panic!("{back:?}")
        };
        assert!(back.loss.is_nan() && back.grad_norm.is_nan() && back.skipped);
    }

    #[test]
    fn garbage_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let good = serde_json::to_string(&step(1, 1.0)).unwrap();
        std::fs::write(&path, format!("{good}\nnope\n")).unwrap();
        let err = read_records(&path).unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn loss_curve_draws_train_average_and_eval() {
        let mut records: Vec<MetricsRecord> = (1..=200)
            .map(|s| step(s, 3.0 / (1.0 + s as f64 * 0.05)))
            .collect();
        records.push(eval(100, 1.2));
        records.push(eval(200, 0.9));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.svg");
        write_loss_svg(&path, &records, "tiny-blip").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in [
            "train loss",
            "mean of 4 steps",
            "eval loss",
            "tiny-blip",
            "step",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(render_loss_svg(&[], "x").is_err());
    }

    #[test]
    fn moving_average_is_trailing() {
        let points = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)];
        let averaged = moving_average(&points, 2);
        assert_eq!(averaged, [(1.0, 1.0), (2.0, 2.0), (3.0, 4.0), (4.0, 6.0)]);
    }

    #[test]
    fn loss_axis_is_logarithmic_and_ends_on_labels_around_the_data() {
        use crate::report::chart::svg_probe::{point_ys, y_labels};
        // A loss that falls by three decades and then flattens (the case a linear axis shows as 0.000).
        let records: Vec<MetricsRecord> = (1..=300)
            .map(|s| step(s, 8.0 * (-(s as f64) / 20.0).exp() + 0.004))
            .collect();
        let svg = render_loss_svg(&records, "decay").unwrap();
        let labels = y_labels(&svg);
        assert!(labels.len() >= 4, "{labels:?}");
        let (top, bottom) = (labels[0], labels[labels.len() - 1]);
        let losses: Vec<f64> = records
            .iter()
            .map(|r| match r {
                MetricsRecord::Step(s) => s.loss,
                MetricsRecord::Eval(_) => unreachable!(),
            })
            .collect();
        let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
        let max = losses.iter().copied().fold(0.0, f64::max);
        assert!(
            bottom.1 <= min && top.1 >= max,
            "labels {labels:?} around {min}..{max}"
        );
        // Every point between the lowest and the highest label (pixel y grows downwards).
        for y in point_ys(&svg) {
            assert!(
                y >= top.0 - 0.5 && y <= bottom.0 + 0.5,
                "point at {y} outside {top:?}..{bottom:?}"
            );
        }
        // Logarithmic: pixel height is linear in log10(label) across all labels.
        let per_decade = (bottom.0 - top.0) / (top.1.log10() - bottom.1.log10());
        for (y, value) in &labels {
            let expected = top.0 + (top.1.log10() - value.log10()) * per_decade;
            assert!(
                (y - expected).abs() < 1.5,
                "label {value} at {y}, a log axis puts it at {expected}"
            );
        }
        // The flat tail is readable: labels below 0.01 exist and are not all "0.000".
        assert!(labels.iter().any(|(_, v)| *v < 0.01), "{labels:?}");
        assert!(
            svg.contains("min 0.00") && svg.contains("max 7."),
            "extremes labelled"
        );
    }
}
