//! What jobs read and write about images and captions: the dataset readers (`dataset`: a folder, a
//! JSONL manifest, COCO captions) and the predictions file (`predictions`: append, read, recover after a
//! crash).

pub mod dataset;
pub mod predictions;
