//! `report.html` of `task: vqa`: the run and its VQA accuracy on top, then one row per question
//! (question, answer, per-question accuracy, the human answers) worst first, then the failures.
//! Rendered as the caption report is (`html`): the minijinja template `templates/vqa_report.html`
//! with HTML auto-escaping of every value (questions, answers and errors come from data).

use serde::Serialize;

use super::html::FailureRow;

const TEMPLATE: &str = include_str!("templates/vqa_report.html");

/// Everything the page shows, already formatted.
#[derive(Debug, Clone, Serialize)]
pub struct VqaHtmlReport {
    pub title: String,
    pub status: String,
    /// `generate` or `rank`.
    pub mode: String,
    pub summary: Vec<(String, String)>,
    /// (label, value) rows: overall, then per answer type; empty without annotations.
    pub accuracy: Vec<(String, String)>,
    pub scored: usize,
    /// In display order ([`order_worst_first`]).
    pub rows: Vec<QuestionRow>,
    pub failures: Vec<FailureRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuestionRow {
    pub question_id: u64,
    pub image: String,
    pub question: String,
    pub answer: String,
    /// Percent, when the question has human answers.
    pub accuracy: Option<f64>,
    pub accuracy_text: String,
    pub human_answers: Vec<String>,
}

impl QuestionRow {
    pub fn new(
        question_id: u64,
        image: String,
        question: String,
        answer: String,
        accuracy: Option<f64>,
        human_answers: Vec<String>,
    ) -> Self {
        QuestionRow {
            question_id,
            image,
            question,
            answer,
            accuracy,
            accuracy_text: accuracy.map_or(String::new(), |a| format!("{a:.2}")),
            human_answers,
        }
    }
}

/// Worst first: scored rows by accuracy ascending (then question id), then unscored rows by id.
pub fn order_worst_first(rows: &mut [QuestionRow]) {
    rows.sort_by(|a, b| match (a.accuracy, b.accuracy) {
        (Some(x), Some(y)) => x.total_cmp(&y).then(a.question_id.cmp(&b.question_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.question_id.cmp(&b.question_id),
    });
}

/// The page's HTML.
pub fn render(report: &VqaHtmlReport) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("vqa_report.html", TEMPLATE)?;
    let template = env.get_template("vqa_report.html")?;
    template.render(minijinja::value::Serde(Page {
        version: env!("CARGO_PKG_VERSION"),
        report,
    }))
}

#[derive(Serialize)]
struct Page<'a> {
    version: &'static str,
    #[serde(flatten)]
    report: &'a VqaHtmlReport,
}

#[cfg(test)]
mod tests {
    use super::*;
    use scraper::{Html, Selector};

    fn row(id: u64, answer: &str, accuracy: Option<f64>) -> QuestionRow {
        QuestionRow::new(
            id,
            format!("img{id}.png"),
            format!("what is {id}?"),
            answer.into(),
            accuracy,
            vec!["cat".into(), "a <b>cat</b>".into()],
        )
    }

    fn page(rows: Vec<QuestionRow>, failures: Vec<FailureRow>) -> Html {
        let mut rows = rows;
        order_worst_first(&mut rows);
        let report = VqaHtmlReport {
            title: "vlmrun vqa <i>runs/v</i>".into(),
            status: "complete".into(),
            mode: "rank".into(),
            summary: vec![("questions".into(), "4".into())],
            accuracy: vec![("overall".into(), "50.00".into())],
            scored: 3,
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
    fn one_row_per_question_worst_first_unscored_last_and_escaped() {
        let hostile = "<script>alert(1)</script>";
        let html = page(
            vec![
                row(7, "cat", Some(100.0)),
                row(3, "none", None),
                row(9, hostile, Some(0.0)),
                row(5, "dog", Some(30.0)),
                row(4, "dog", Some(30.0)),
            ],
            vec![FailureRow {
                id: "11".into(),
                image: "<b>x</b>.png".into(),
                error: "cannot decode".into(),
            }],
        );
        let ids = texts(&html, "table.questions tbody tr.question td:nth-child(2)");
        assert_eq!(ids, ["9", "4", "5", "7", "3"]);
        assert_eq!(texts(&html, "td.answer")[0], hostile);
        let accuracy = texts(&html, "table.questions tbody tr.question td:nth-child(6)");
        assert_eq!(accuracy, ["0.00", "30.00", "30.00", "100.00", "no answers"]);
        assert_eq!(texts(&html, "script").len(), 0);
        assert_eq!(texts(&html, "td b, h1 i").len(), 0);
        assert_eq!(texts(&html, ".humans")[0], "cat, a <b>cat</b>");
        assert_eq!(
            texts(&html, "table.failures tr.failure td:nth-child(2)"),
            ["<b>x</b>.png"]
        );
    }
}
