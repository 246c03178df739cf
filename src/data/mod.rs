//! What jobs read and write about images and captions: the dataset readers (`dataset`: a folder, a
//! JSONL manifest, COCO captions, LAVIS annotations), the predictions file (`predictions`: append,
//! read, recover after a crash), the COCO results file (`results`) and VQAv2's question, annotation
//! and submission files (`vqa`).

pub mod dataset;
pub mod predictions;
pub mod results;
pub mod vqa;
