//! report.html of a baseline run on the tiny model, parsed as a browser parses it (html5ever via
//! scraper): one row per captioned image, worst first by report.json's per-image CIDEr, captions as
//! results.json has them, data from the dataset escaped, thumbnails embedded, failures listed.

use scraper::{ElementRef, Html, Selector};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn select<'a>(html: &'a Html, selector: &str) -> Vec<ElementRef<'a>> {
    let selector = Selector::parse(selector).unwrap();
    html.select(&selector).collect()
}

fn text(element: &ElementRef<'_>) -> String {
    element.text().collect()
}

fn cell(row: &ElementRef<'_>, column: usize) -> String {
    let selector = Selector::parse(&format!("td:nth-child({column})")).unwrap();
    row.select(&selector)
        .next()
        .map(|td| text(&td))
        .unwrap_or_default()
}

#[test]
fn report_html_lists_every_image_worst_first_escaped_with_failures() {
    let dir = tempfile::tempdir().unwrap();
    let images = Path::new(ROOT).join("tests/fixtures/images");
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let hostile = "<script>alert('reference')</script> a rocket";
    let manifest = dir.path().join("data.jsonl");
    let lines = [
        serde_json::json!({"id": "<b>astronaut</b>", "image": images.join("astronaut.png"), "references": ["a smiling astronaut in a spacesuit"]}),
        serde_json::json!({"id": "chelsea", "image": images.join("chelsea.png"), "caption": "a tabby cat looking to the side"}),
        serde_json::json!({"id": "coffee", "image": images.join("coffee.png"), "references": ["a cup of coffee on a saucer", "a white mug"]}),
        serde_json::json!({"id": "rocket", "image": images.join("rocket.png"), "references": [hostile]}),
        serde_json::json!({"id": "unscored", "image": images.join("gray_45x60.png")}),
        serde_json::json!({"id": "broken", "image": broken}),
    ];
    let text_lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&manifest, text_lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("vlmrun"))
        .current_dir(ROOT)
        .env("VLMRUN_NO_CUDA_LAUNCH", "1")
        .args(["--device", "cpu", "--set"])
        .arg(format!("data.path={}", manifest.display()))
        .arg("--set")
        .arg(format!("output.dir={}", out.display()))
        .args(["--set", "generation.prompt=a picture of "])
        .args(["baseline", "--fresh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "one image fails: {stderr}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let per_image = report["metrics"]["per_image"].as_object().unwrap();
    assert_eq!(per_image.len(), 4);
    let results: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let captions: BTreeMap<String, String> = results
        .iter()
        .map(|r| {
            (
                r["image_id"].as_str().unwrap().to_string(),
                r["caption"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let html = Html::parse_document(&std::fs::read_to_string(out.join("report.html")).unwrap());
    let rows = select(&html, "table.images tbody tr.image");
    assert_eq!(rows.len(), 5, "one row per captioned image");

    // Worst first: the scored rows in ascending report.json CIDEr (ties by BLEU-4, then id), then
    // the image without references.
    let mut expected: Vec<(&String, &Value)> = per_image.iter().collect();
    expected.sort_by(|a, b| {
        let key = |v: &Value| (v["cider"].as_f64().unwrap(), v["bleu"][3].as_f64().unwrap());
        let (x, y) = (key(a.1), key(b.1));
        x.0.total_cmp(&y.0)
            .then(x.1.total_cmp(&y.1))
            .then(a.0.cmp(b.0))
    });
    let mut expected_ids: Vec<String> = expected.iter().map(|(id, _)| id.to_string()).collect();
    expected_ids.push("unscored".to_string());
    let ids: Vec<String> = rows.iter().map(|row| cell(row, 3)).collect();
    assert_eq!(ids, expected_ids);
    for row in &rows {
        let id = cell(row, 3);
        assert_eq!(row.value().attr("data-id"), Some(id.as_str()));
        assert_eq!(cell(row, 4), captions[&id], "the caption as scored");
        match per_image.get(&id) {
            Some(scores) => {
                let cider: f64 = row.value().attr("data-cider").unwrap().parse().unwrap();
                assert_eq!(cider, scores["cider"].as_f64().unwrap());
                assert_eq!(
                    cell(row, 6),
                    format!("{:.4}", scores["cider"].as_f64().unwrap())
                );
            }
            None => assert_eq!(row.value().attr("data-cider"), None),
        }
        let img = row
            .select(&Selector::parse("td.thumb img").unwrap())
            .next()
            .expect("a thumbnail");
        let src = img.value().attr("src").unwrap();
        assert!(
            src.starts_with("data:image/jpeg;base64,"),
            "{}",
            &src[..40.min(src.len())]
        );
        assert!(src.len() < 16_000, "a small thumbnail, {} bytes", src.len());
    }

    // Data is text, never markup: the page's own script only, the ids and references verbatim.
    let scripts = select(&html, "script");
    assert_eq!(scripts.len(), 1);
    assert!(!text(&scripts[0]).contains("alert"));
    assert!(select(&html, "td b").is_empty());
    assert!(ids.contains(&"<b>astronaut</b>".to_string()));
    let references: Vec<String> = select(&html, "ul.refs li").iter().map(text).collect();
    assert!(references.contains(&hostile.to_string()), "{references:?}");

    // Metrics and the run's summary on top, the failure listed with its error.
    let metrics: Vec<String> = select(&html, "#metrics tr").iter().map(text).collect();
    assert!(
        metrics.iter().any(|m| m.starts_with("CIDEr")),
        "{metrics:?}"
    );
    let summary: Vec<String> = select(&html, "#summary th").iter().map(text).collect();
    assert!(summary.contains(&"throughput".to_string()) && summary.contains(&"status".to_string()));
    let failures = select(&html, "table.failures tr.failure");
    assert_eq!(failures.len(), 1);
    assert_eq!(cell(&failures[0], 1), "broken");
    assert!(!cell(&failures[0], 3).is_empty());
}
