//! The data-parallel part of `baseline` (world size > 1): `ranked` is one rank captioning its shard,
//! `done` its completion record (`rank-K.done.json`), `wait` rank 0 waiting for the other ranks,
//! `collect` reading the shards back, and `merged` writing the usual outputs from them. What ranks
//! are and which items each owns (`distributed`) is not baseline's and lives below it.

pub mod collect;
pub mod done;
pub mod merged;
pub mod ranked;
pub mod wait;
