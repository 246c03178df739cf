//! BLIP image-text matching against transformers 5.17 (`BlipForImageTextRetrieval`) on the tiny
//! random model `models/tiny-blip-itm` (tests/fixtures/make_itm_fixtures.py): for 4 images x 3
//! texts, with transformers' `[CLS]` and LAVIS's `[ENC]` as the first token, the ITM logits and
//! p(match) within 1e-4 and the ITC cosine similarity within 1e-5 (absolute).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;
use vlmrun::models::blip::itm::image_text_hidden_size;
use vlmrun::models::blip::{BlipForImageTextRetrieval, BlipWeights};
use vlmrun::preprocess::prompt::PromptTokenizer;
use vlmrun::preprocess::ImageProcessor;

#[derive(Debug, Deserialize)]
struct Case {
    image: String,
    text: String,
    first_token: String,
    input_ids: Vec<u32>,
    itm_logits: Vec<f32>,
    itm_score: f32,
    itc_score: f32,
}

#[derive(Debug, Deserialize)]
struct Expected {
    image_size: usize,
    enc: u32,
    cases: Vec<Case>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn itm_and_itc_match_transformers() {
    let root = repo();
    let text = std::fs::read_to_string(root.join("tests/fixtures/itm/expected.json")).unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    let dir = root.join("models/tiny-blip-itm");
    let weights = BlipWeights::locate(&dir).unwrap();
    let embed = image_text_hidden_size(&weights.config_text().unwrap()).unwrap();
    assert_eq!(embed, 16);
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&weights.weight_files, DType::F32, &Device::Cpu)
    }
    .unwrap();
    let model = BlipForImageTextRetrieval::new(&weights.config, embed, vb).unwrap();
    let tokenizer = PromptTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let processor = ImageProcessor::blip(expected.image_size);
    let s = expected.image_size;
    for case in &expected.cases {
        let mut ids = tokenizer.text_ids(&case.text).unwrap();
        if case.first_token == "enc" {
            ids[0] = expected.enc;
        }
        assert_eq!(ids, case.input_ids);
        let path = root.join(format!("tests/fixtures/images/{}.png", case.image));
        let values = processor.process_file(Path::new(&path)).unwrap();
        let pixels = Tensor::from_vec(values, (1, 3, s, s), &Device::Cpu).unwrap();
        let image_embeds = model.image_embeds(&pixels).unwrap();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.itm_logits(&image_embeds, &ids, None).unwrap();
        let got: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        for (g, w) in got.iter().zip(&case.itm_logits) {
            assert!((g - w).abs() < 1e-4 * w.abs().max(1.0), "{case:?}: {got:?}");
        }
        let p = BlipForImageTextRetrieval::itm_probability(&logits)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!((p - case.itm_score).abs() < 1e-4, "{case:?}: {p}");
        let image = model.image_feature(&image_embeds).unwrap();
        let text = model.text_feature(&ids, None).unwrap();
        let itc = (image * text)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((itc - case.itc_score).abs() < 1e-5, "{case:?}: {itc}");
    }
}
