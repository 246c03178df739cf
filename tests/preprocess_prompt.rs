//! Prompt ids and caption decoding against transformers 5.17's BertTokenizer on BLIP's
//! tokenizer.json (tests/fixtures/make_prompt_fixtures.py): exact ids and exact strings.

use std::path::PathBuf;

use serde::Deserialize;
use vlmrun::preprocess::prompt::{PromptError, PromptTokenizer, DECODER_BOS_ID};

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<PromptCase>,
    decodes: Vec<DecodeCase>,
}

#[derive(Deserialize)]
struct PromptCase {
    text: String,
    decoder_input_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct DecodeCase {
    ids: Vec<u32>,
    text: String,
    text_clean_up_spaces: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tokenizer() -> PromptTokenizer {
    PromptTokenizer::from_file(repo().join("models/tokenizer/tokenizer.json"))
        .expect("BLIP tokenizer")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/prompt/expected.json"))
        .expect("prompt fixtures");
    serde_json::from_str(&text).expect("valid expected.json")
}

#[test]
fn prompt_ids_follow_blip_generate() {
    let tokenizer = tokenizer();
    assert_eq!(
        tokenizer.prompt_ids("a picture of").expect("ids"),
        [30522, 1037, 3861, 1997]
    );
    assert_eq!(tokenizer.prompt_ids("").expect("ids"), [DECODER_BOS_ID]);
    // LAVIS' prompt: the trailing space is dropped by BERT's whitespace pre-tokenizer.
    assert_eq!(
        tokenizer.prompt_ids("a picture of ").expect("ids"),
        [30522, 1037, 3861, 1997]
    );
}

#[test]
fn prompt_ids_match_transformers_on_every_fixture_prompt() {
    let tokenizer = tokenizer();
    let expected = expected();
    assert!(expected.prompts.len() >= 8);
    for case in &expected.prompts {
        assert_eq!(
            tokenizer.prompt_ids(&case.text).expect("ids"),
            case.decoder_input_ids,
            "prompt {:?}",
            case.text
        );
    }
}

#[test]
fn decode_matches_transformers_with_and_without_space_cleanup() {
    let plain = tokenizer();
    let cleaned = tokenizer().with_clean_up_tokenization_spaces(true);
    let expected = expected();
    for case in &expected.decodes {
        assert_eq!(
            plain.decode(&case.ids).expect("decode"),
            case.text,
            "ids {:?}",
            case.ids
        );
        assert_eq!(
            cleaned.decode(&case.ids).expect("decode"),
            case.text_clean_up_spaces,
            "ids {:?}",
            case.ids
        );
    }
    // The fixtures must include a case where the two settings differ.
    assert!(expected
        .decodes
        .iter()
        .any(|c| c.text != c.text_clean_up_spaces));
    assert_eq!(
        plain
            .decode(&[30522, 1037, 3861, 1997, 1037, 2450, 102, 0])
            .expect("decode"),
        "a picture of a woman"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("tokenizer.json");
    let err = PromptTokenizer::from_file(&missing)
        .err()
        .expect("missing tokenizer");
    assert!(
        matches!(err, PromptError::Load { .. }) && err.to_string().contains("tokenizer.json"),
        "{err}"
    );

    std::fs::write(&missing, b"{not json").expect("write");
    let err = PromptTokenizer::from_file(&missing)
        .err()
        .expect("invalid tokenizer");
    assert!(matches!(err, PromptError::Load { .. }), "{err}");
}

#[test]
fn tokenizer_without_cls_sep_post_processor_is_refused_clearly() {
    let text =
        std::fs::read_to_string(repo().join("models/tokenizer/tokenizer.json")).expect("tokenizer");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    json["post_processor"] = serde_json::Value::Null;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no_post_processor.json");
    std::fs::write(&path, json.to_string()).expect("write");
    let tokenizer = PromptTokenizer::from_file(&path).expect("loads");
    let err = tokenizer
        .prompt_ids("a picture of")
        .expect_err("no [CLS]/[SEP]");
    assert!(
        matches!(err, PromptError::MissingSpecialTokens { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no_post_processor.json"), "{err}");
}

#[test]
fn decoding_an_id_outside_the_vocabulary_does_not_panic() {
    // tokenizers skips unknown ids; whatever it returns, it must not panic.
    let _ = tokenizer().decode(&[30522, 99_999_999, 1037]);
}
