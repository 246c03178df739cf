//! Errors of image loading and preprocessing; each names the file and what to do.

use std::path::PathBuf;

/// Why an image could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The path does not exist.
    #[error("image file {path} not found: check the path (relative paths start at the working directory)")]
    NotFound { path: PathBuf },

    /// The path is a directory, a FIFO or another non-file (a FIFO would block the read forever).
    #[error(
        "image {path} is {kind}, not an image file: point the dataset at the image file itself"
    )]
    NotAFile { path: PathBuf, kind: &'static str },

    /// The file exists but could not be read.
    #[error("cannot read image file {path}: {source}; check that it is a readable file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file has no bytes at all.
    #[error("image file {path} is empty (0 bytes): re-download or re-export it")]
    Empty { path: PathBuf },

    /// The bytes are not a PNG, JPEG or WebP image, or use a feature of one the decoder lacks.
    #[error("image file {path} is not a supported image ({detail}): vlmrun reads PNG, JPEG and WebP; convert it to PNG")]
    UnsupportedFormat { path: PathBuf, detail: String },

    /// The header announces more pixels than `max_pixels` allows (checked before decoding).
    #[error(
        "image {path} is {width}x{height} = {pixels} pixels, above the limit of {max_pixels}: \
         downscale it, or raise max_pixels if the file is trusted"
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        pixels: u64,
        max_pixels: u64,
    },

    /// The decoder found truncated or invalid data.
    #[error("image file {path} is truncated or corrupt ({detail}): re-download or re-encode it")]
    Corrupt { path: PathBuf, detail: String },
}
