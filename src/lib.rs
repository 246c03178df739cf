//! vlmrun: a Rust-native GPU harness for vision-language models.
//!
//! The tree, top down. Its one rule: a module imports only modules on the lines below its own line,
//! never one above and never another one of its own line (so the jobs never import one another).
//! Inside a folder its files import each other without loops (its `mod.rs` aside, which declares
//! the files and may define what they share).
//!
//! ```text
//! commands/      one file per subcommand: parsed arguments -> a job's options -> the job's run
//! baseline/ bench/ doctor/ fidelity/ train/   the jobs, siblings (baseline/shards/: the ranks of a
//!                data-parallel baseline, their done files, the merge; baseline/vqa/,
//!                retrieval.rs: its `task: vqa` and `task: retrieval`);  cli.rs  the command line
//! engine/        the one assembly of a runnable model from the configuration; the captioner, the
//!                VQA answerer, the image-text matcher, LAVIS's retrieval evaluation over it
//! generate/      greedy and beam search over the model seam (`models::family::Decoder`)
//! models/        the seam (family.rs) and the family registry (registry.rs); BLIP captioning, VQA
//!                and retrieval, each layer's training forward/backward (blip/backprop/); shared
//!                layers (linear, norm, projections, CPU GEMV), parameter gradients by name,
//!                weight formats (GGUF, quantization), the KV cache, a model directory's label
//!                (vlmrun-model.json: random or demo)
//! kernels/       fused CUDA ops with their launchers and CPU stubs (fused/table.rs: the one list of
//!                their kernels), hand-written backward passes,
//!                the f32-accumulating softmax; training kernels with a backward pass, one folder
//!                per op (attention, gelu, layer_norm, add, cross_entropy, adamw: kernel.cu,
//!                cuda.rs, the entry point; half.cu: the 16-bit loads and stores they share);
//!                backprop.rs: each training op's forward and backward, kernel or composed
//! distributed/ metrics/ preprocess/ report/   ranks and shards of a data-parallel run; COCO caption
//!                metrics and caption scoring, VQA accuracy, retrieval recall; decode, Pillow-exact resize, normalize, prompt tokens;
//!                atomic reports, report.html, the GPU memory monitor, charts, the output directory,
//!                progress
//! data/ error.rs dataset readers, the predictions and COCO results files; the error every command returns
//! device/ exit.rs hub/   probe, launcher, device policy and smoke test; exit codes; model files and
//!                the Hugging Face cache
//! config/        the run configuration
//! paths.rs       what a path is when it is not the file expected; write-failure messages (disk full)
//! ```
//!
//! `main.rs` (the binary) stands above them all. `scripts/layout/imports.py` checks the rule
//! against the imports (docs/layout.md).

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
pub mod paths;
pub mod preprocess;
pub mod report;
pub mod train;
