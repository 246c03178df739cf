//! vlmrun: a Rust-native GPU harness for vision-language models.
//!
//! Layers, bottom up: `config` (the run configuration), `device` (probing, the CUDA launcher and the
//! device/precision policy), `hub` (where model files come from), `preprocess` (decode, Pillow-exact
//! resize, normalize, prompt tokens), `models` (BLIP), `generate` (greedy and beam search), `metrics`
//! (COCO caption metrics), `captioner` (model + tokenizer + processor on one device), `baseline` (the
//! dataset run), `report` (atomic reports, statistics), `doctor` (environment checks), `cli` and
//! `commands` (the command line), `error`/`exit` (errors and exit codes).

pub mod baseline;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod exit;
pub mod fidelity;
pub mod generate;
pub mod hub;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod preprocess;
pub mod report;
pub mod train;
