//! `report.html`: a run's captions to look at. Metrics and timings on top, then one table row per
//! image (thumbnail, id, caption, references, per-image scores) worst first by CIDEr, sortable by any
//! score column (a few lines of inline JS), then the failures. Rendered by the minijinja template
//! `templates/report.html` with HTML auto-escaping of every value (ids, captions, references, paths
//! and errors come from data); thumbnails are small JPEG data URIs made by the caller, so the file is
//! self-contained and can be copied off the machine that ran it.

use serde::Serialize;

/// The template, compiled into the binary.
const TEMPLATE: &str = include_str!("templates/report.html");

/// Everything the page shows, already formatted (the template only lays it out).
#[derive(Debug, Clone, Serialize)]
pub struct HtmlReport {
    pub title: String,
    pub status: String,
    /// The prompt stripped from captions before scoring (empty: none).
    pub prompt: String,
    /// A warning shown above everything when the model is known not to be a real captioner
    /// (random weights, the demo model).
    pub model_caveat: Option<String>,
    /// (label, value) rows: status, device, model, counts, timings, memory.
    pub summary: Vec<(String, String)>,
    /// (metric, value) rows; empty when nothing was scored.
    pub metrics: Vec<(String, String)>,
    pub metrics_images: usize,
    /// In display order ([`order_worst_first`]).
    pub rows: Vec<ImageRow>,
    pub failures: Vec<FailureRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    pub id: String,
    /// The image path as the dataset gave it.
    pub image: String,
    /// A `data:image/jpeg;base64,...` URI, or none when the image could not be read again.
    pub thumbnail: Option<String>,
    /// The caption as scored (prompt stripped).
    pub caption: String,
    pub references: Vec<String>,
    pub scores: Option<RowScores>,
}

/// One image's scores, as numbers (sorting) and as text (display).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowScores {
    pub cider: f64,
    pub bleu4: f64,
    pub bleu1: f64,
    pub rouge_l: f64,
    pub cider_text: String,
    pub bleu4_text: String,
    pub bleu1_text: String,
    pub rouge_l_text: String,
}

impl RowScores {
    pub fn new(cider: f64, bleu1: f64, bleu4: f64, rouge_l: f64) -> Self {
        RowScores {
            cider,
            bleu4,
            bleu1,
            rouge_l,
            cider_text: format!("{cider:.4}"),
            bleu4_text: format!("{bleu4:.4}"),
            bleu1_text: format!("{bleu1:.4}"),
            rouge_l_text: format!("{rouge_l:.4}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub id: String,
    pub image: String,
    pub error: String,
}

/// Worst first: scored rows by CIDEr ascending (then BLEU-4, then id), then unscored rows in their
/// given order (a stable sort).
pub fn order_worst_first(rows: &mut [ImageRow]) {
    rows.sort_by(|a, b| match (&a.scores, &b.scores) {
        (Some(x), Some(y)) => x
            .cider
            .total_cmp(&y.cider)
            .then(x.bleu4.total_cmp(&y.bleu4))
            .then_with(|| a.id.cmp(&b.id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// The page's HTML.
pub fn render(report: &HtmlReport) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    // Escape everything, whatever the template's name.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)?;
    let template = env.get_template("report.html")?;
    template.render(minijinja::value::Serde(Page {
        version: env!("CARGO_PKG_VERSION"),
        report,
    }))
}

/// The template's context: the report and the version that made it.
#[derive(Serialize)]
struct Page<'a> {
    version: &'static str,
    #[serde(flatten)]
    report: &'a HtmlReport,
}

#[cfg(test)]
mod tests {
    use super::*;
    use scraper::{Html, Selector};

    fn row(id: &str, caption: &str, cider: Option<f64>) -> ImageRow {
        ImageRow {
            id: id.into(),
            image: format!("{id}.png"),
            thumbnail: None,
            caption: caption.into(),
            references: vec!["a cat".into(), "x < y & \"z\"".into()],
            scores: cider.map(|c| RowScores::new(c, 0.5, 0.25, 0.4)),
        }
    }

    fn page(rows: Vec<ImageRow>, failures: Vec<FailureRow>) -> Html {
        let mut rows = rows;
        order_worst_first(&mut rows);
        let report = HtmlReport {
            title: "vlmrun baseline <b>runs/x</b>".into(),
            status: "complete".into(),
            prompt: "a picture of".into(),
            model_caveat: Some("random <weights>".into()),
            summary: vec![("device".into(), "cpu".into())],
            metrics: vec![("CIDEr".into(), "0.5000".into())],
            metrics_images: 2,
            rows,
            failures,
        };
        Html::parse_document(&render(&report).unwrap())
    }

    fn texts(html: &Html, selector: &str) -> Vec<String> {
        let selector = Selector::parse(selector).unwrap();
        html.select(&selector)
            .map(|e| e.text().collect::<String>())
            .collect()
    }

    #[test]
    fn one_row_per_image_worst_first_unscored_last() {
        let html = page(
            vec![
                row("good", "a cat on a mat", Some(2.5)),
                row("none", "no refs", None),
                row("bad", "a dog", Some(0.1)),
                row("mid", "a cat", Some(1.0)),
            ],
            vec![],
        );
        let ids = texts(&html, "table.images tbody tr.image td:nth-child(3)");
        assert_eq!(ids, ["bad", "mid", "good", "none"]);
        let cider = Selector::parse("table.images tbody tr.image").unwrap();
        let values: Vec<Option<&str>> = html
            .select(&cider)
            .map(|tr| tr.value().attr("data-cider"))
            .collect();
        assert_eq!(values, [Some("0.1"), Some("1.0"), Some("2.5"), None]);
        assert_eq!(texts(&html, "#failures").len(), 0);
    }

    #[test]
    fn everything_from_data_is_escaped() {
        let hostile = "<script>alert('x')</script>";
        let html = page(
            vec![row("<img src=x onerror=alert(1)>", hostile, Some(0.3))],
            vec![FailureRow {
                id: "f".into(),
                image: "<b>broken</b>.png".into(),
                error: "cannot decode <svg onload=alert(1)>".into(),
            }],
        );
        // Only the page's own script element exists; the caption is text.
        let scripts = texts(&html, "script");
        assert_eq!(scripts.len(), 1);
        assert!(!scripts[0].contains("alert"));
        assert_eq!(texts(&html, "td.caption"), [hostile]);
        assert_eq!(texts(&html, "td img, td svg, td b").len(), 0);
        assert_eq!(texts(&html, "h1 b").len(), 0);
        assert_eq!(texts(&html, "h1"), ["vlmrun baseline <b>runs/x</b>"]);
        assert_eq!(texts(&html, "#model-caveat"), ["random <weights>"]);
        assert_eq!(texts(&html, "ul.refs li")[1], "x < y & \"z\"");
        assert_eq!(
            texts(&html, "table.failures tr.failure td:nth-child(2)"),
            ["<b>broken</b>.png"]
        );
    }
}
