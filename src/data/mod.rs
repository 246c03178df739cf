//! What jobs read and write about images and captions: the dataset readers (`dataset`: a folder, a
//! JSONL manifest, COCO captions), the predictions file (`predictions`: append, read, recover after a
//! crash) and VQAv2's question, annotation and submission files (`vqa`).

pub mod dataset;
pub mod predictions;
pub mod vqa;
