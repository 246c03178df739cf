//! Bit-exactness of `resize_bicubic` against real Pillow, in each pass order: 12.3.0
//! (`HorizontalFirst`), 13.0.0 (`Pillow13`) and 12.1.1 (`AlwaysHorizontal`), on the cases of
//! tests/fixtures/make_resize_fixtures.py.
//!
//! Tolerance: none. Every output byte must equal Pillow's; a failure lists, per case and
//! order, how many of the values differ and by how much at most.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Deserialize;
use vlmrun::preprocess::resize::resize_bicubic;
use vlmrun::preprocess::PassOrder;

#[derive(Deserialize)]
struct CaseFile {
    pillow: String,
    others: BTreeMap<String, String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    seed: u64,
    in_width: u32,
    in_height: u32,
    out_width: u32,
    out_height: u32,
    pillow13_values_differing: usize,
    pillow12_1_values_differing: usize,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize")
}

/// The splitmix64 byte stream of the fixture script (`random_rgb_bytes`).
fn random_rgb_bytes(seed: u64, count: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(count + 8);
    while out.len() < count {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(count);
    out
}

fn load_png(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|err| panic!("cannot open fixture {}: {err}", path.display()))
        .into_rgb8()
}

/// Count of differing values and the largest absolute difference.
fn compare(actual: &RgbImage, expected: &RgbImage) -> (usize, u8) {
    assert_eq!(actual.dimensions(), expected.dimensions());
    actual
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .filter(|(a, e)| a != e)
        .fold((0, 0), |(count, max), (a, e)| {
            (count + 1, max.max(a.abs_diff(*e)))
        })
}

/// Pillow 12.3's output, or another version's output rebuilt from its stored delta.
fn expected_output(
    dir: &Path,
    case: &Case,
    base: &RgbImage,
    tag: &str,
    differing: usize,
) -> RgbImage {
    if differing == 0 {
        return base.clone();
    }
    let delta = load_png(&dir.join(format!("expected/{}.{tag}_delta.png", case.name)));
    let bytes = base
        .as_raw()
        .iter()
        .zip(delta.as_raw())
        .map(|(v, d)| v.wrapping_add(*d))
        .collect();
    let rebuilt = RgbImage::from_raw(case.out_width, case.out_height, bytes).expect("delta size");
    assert_eq!(
        compare(&rebuilt, base).0,
        differing,
        "{}: delta of {tag} is inconsistent",
        case.name
    );
    rebuilt
}

#[test]
fn resize_matches_pillow_bit_for_bit_in_every_pass_order() {
    let dir = fixture_dir();
    let json = std::fs::read_to_string(dir.join("cases.json"))
        .expect("cases.json (run make_resize_fixtures.py)");
    let file: CaseFile = serde_json::from_str(&json).expect("valid cases.json");
    assert_eq!(file.pillow, "12.3.0");
    assert_eq!(
        file.others.get("pillow13").map(String::as_str),
        Some("13.0.0")
    );
    assert_eq!(
        file.others.get("pillow12_1").map(String::as_str),
        Some("12.1.1")
    );
    assert!(file.cases.len() >= 20, "only {} cases", file.cases.len());

    let mut failures = Vec::new();
    let mut cases_where_versions_differ = [0; 2];
    for case in &file.cases {
        let data = random_rgb_bytes(case.seed, (case.in_width * case.in_height * 3) as usize);
        let input = RgbImage::from_raw(case.in_width, case.in_height, data).expect("input size");
        let pillow12_3 = load_png(&dir.join(format!("expected/{}.png", case.name)));
        let pillow13 = expected_output(
            &dir,
            case,
            &pillow12_3,
            "pillow13",
            case.pillow13_values_differing,
        );
        let pillow12_1 = expected_output(
            &dir,
            case,
            &pillow12_3,
            "pillow12_1",
            case.pillow12_1_values_differing,
        );
        cases_where_versions_differ[0] += usize::from(case.pillow13_values_differing > 0);
        cases_where_versions_differ[1] += usize::from(case.pillow12_1_values_differing > 0);
        for (order, expected) in [
            (PassOrder::HorizontalFirst, &pillow12_3),
            (PassOrder::Pillow13, &pillow13),
            (PassOrder::AlwaysHorizontal, &pillow12_1),
        ] {
            let actual = resize_bicubic(&input, case.out_width, case.out_height, order);
            let (count, max) = compare(&actual, expected);
            if count > 0 {
                failures.push(format!(
                    "{} {order:?}: {count} of {} values differ, max |diff| {max}",
                    case.name,
                    expected.as_raw().len()
                ));
            }
        }
    }
    // The fixtures must exercise every rule where it changes the result.
    assert!(
        cases_where_versions_differ[0] >= 5,
        "too few cases where Pillow 13 differs from 12.3"
    );
    assert!(
        cases_where_versions_differ[1] >= 2,
        "too few cases where Pillow 12.1 differs from 12.3"
    );
    assert!(
        failures.is_empty(),
        "resize differs from Pillow:\n{}",
        failures.join("\n")
    );
}
