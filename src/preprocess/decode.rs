//! Image file -> 8-bit RGB, as `PIL.ImageOps.exif_transpose(Image.open(f)).convert("RGB")`.
//!
//! - The format is recognised from the content (not the extension): PNG, JPEG and WebP.
//!   Other formats Pillow reads (GIF, BMP, TIFF, ...) are refused with "convert it to PNG".
//! - The pixel count is checked from the header, before any pixel is decoded, against
//!   `max_pixels` (Pillow's `Image.MAX_IMAGE_PIXELS` is 89_478_485; Pillow only warns up to
//!   twice that and raises above, vlmrun refuses anything above the limit).
//! - EXIF orientation (JPEG APP1, PNG `eXIf`, WebP `EXIF`) is applied like `exif_transpose`.
//!   Not replicated: Pillow also takes an orientation from XMP when EXIF has none, and from a
//!   PNG "Raw profile type exif" text chunk (ImageMagick); such files stay unrotated here.
//! - Conversion to RGB follows Pillow's `convert("RGB")`, checked against Pillow 12.3.0:
//!   - gray (`L`, and 1/2/4-bit gray, expanded to 0..=255 like Pillow) is replicated;
//!   - alpha (`LA`, `RGBA`, palette or gray with `tRNS`) is dropped, never composited;
//!   - palette images are expanded through the palette;
//!   - 16-bit gray PNG opens in Pillow as mode `I;16` and converts to RGB by *clipping*
//!     (values above 255 become 255, 0..=255 are kept): replicated here;
//!   - 16-bit RGB, RGBA and gray+alpha PNG open in Pillow as 8-bit modes keeping the
//!     *high byte* of each sample (`v >> 8`): replicated here;
//!   - CMYK JPEG opens in Pillow as mode `CMYK` (Adobe-inverted data un-inverted) and converts
//!     with `(255 - c) * (255 - k) / 255` per channel; zune-jpeg does its own CMYK -> RGB,
//!     measured within 1 level of Pillow.
//! - JPEG goes through zune-jpeg, not libjpeg-turbo (Pillow). Measured against Pillow 12.3.0
//!   (tests/preprocess_decode.rs): 4:4:4 and grayscale files match within 2 levels on ~1% of
//!   values (IDCT rounding); 4:2:0 chroma-subsampled files differ by up to 4 levels on ~20% of
//!   values on real photos (different chroma upsampling); CMYK within 1 level. At the model
//!   input (after resize and normalization) that is at most ~0.06. The tests allow 2 levels
//!   (4:4:4, gray) and 4 levels (4:2:0). PNG is bit-exact: use PNG where exact agreement with
//!   the Python baseline matters.
//! - A JPEG without its end-of-image marker is refused as truncated, like Pillow does
//!   (zune-jpeg alone would fill the missing part with gray).
//! - WebP goes through the pure-Rust `image-webp` decoder: lossless WebP is exact; the lossy
//!   WebP fixture also matched libwebp exactly, though that is not guaranteed in general.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use super::error::PreprocessError;

/// PNG colour type of 16-bit grayscale, read from the IHDR chunk.
const PNG_COLOR_TYPE_GRAY: u8 = 0;
/// Byte offset of the IHDR colour-type field in a PNG file (signature 8 + length 4 + tag 4 +
/// width 4 + height 4 + bit depth 1).
const PNG_COLOR_TYPE_OFFSET: usize = 25;

/// Reads and decodes the image at `path` into Pillow-equivalent RGB.
pub fn load_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage, PreprocessError> {
    if let Some(kind) = crate::paths::not_a_file(path) {
        return Err(PreprocessError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PreprocessError::NotFound {
            path: path.to_path_buf(),
        },
        _ => PreprocessError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    decode_rgb(&bytes, path, max_pixels)
}

/// Decodes an in-memory image file into Pillow-equivalent RGB; `path` only labels errors.
pub fn decode_rgb(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<RgbImage, PreprocessError> {
    let label = || path.to_path_buf();
    if bytes.is_empty() {
        return Err(PreprocessError::Empty { path: label() });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| corrupt(label(), &err))?;
    let format = reader
        .format()
        .ok_or_else(|| PreprocessError::UnsupportedFormat {
            path: label(),
            detail: "unrecognised file signature".to_string(),
        })?;
    // png's header reading already reads ahead into the image data, so a PNG's size is taken
    // from its IHDR chunk first.
    if format == ImageFormat::Png {
        if let Some((width, height)) = png_header_dimensions(bytes) {
            check_pixel_limit(width, height, max_pixels, path)?;
        }
    }
    // The pixel limit replaces the decoder's allocation limit, which would refuse legitimate
    // 16-bit images well under the pixel limit.
    reader.limits(Limits::no_limits());
    let mut decoder = reader
        .into_decoder()
        .map_err(|err| decode_error(label(), err))?;
    let (width, height) = decoder.dimensions();
    let pixels = check_pixel_limit(width, height, max_pixels, path)?;
    if pixels == 0 {
        return Err(PreprocessError::Corrupt {
            path: label(),
            detail: format!("header announces a {width}x{height} image"),
        });
    }
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        // zune-jpeg fills missing data with gray; Pillow refuses ("image file is truncated").
        return Err(PreprocessError::Corrupt {
            path: label(),
            detail: "JPEG data ends before its end-of-image marker".to_string(),
        });
    }
    // A broken EXIF block leaves the image unrotated (the pixels may still be fine); a broken
    // file is reported by the pixel decoding just below.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let decoded = DynamicImage::from_decoder(decoder).map_err(|err| decode_error(label(), err))?;
    let gray16_clips = format == ImageFormat::Png
        && bytes.get(PNG_COLOR_TYPE_OFFSET) == Some(&PNG_COLOR_TYPE_GRAY);
    let rgb =
        to_pillow_rgb(decoded, gray16_clips).ok_or_else(|| PreprocessError::UnsupportedFormat {
            path: label(),
            detail: "floating-point pixels".to_string(),
        })?;
    let mut oriented = DynamicImage::ImageRgb8(rgb);
    oriented.apply_orientation(orientation);
    Ok(oriented.into_rgb8())
}

/// Refuses `width x height` above `max_pixels`; returns the pixel count.
fn check_pixel_limit(
    width: u32,
    height: u32,
    max_pixels: u64,
    path: &Path,
) -> Result<u64, PreprocessError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(PreprocessError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            pixels,
            max_pixels,
        });
    }
    Ok(pixels)
}

/// Width and height from a PNG's IHDR chunk (always the first chunk, at byte 8).
fn png_header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

/// Whether a JPEG has its end-of-image marker (FF D9) after the first start-of-scan.
///
/// The header segments are walked by their lengths (they may contain any bytes, e.g. an EXIF
/// thumbnail with its own FF D9); inside entropy-coded data a 0xFF byte is always followed by
/// 0x00 or a restart/segment marker, so FF D9 there can only be the end marker.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    const START_OF_SCAN: u8 = 0xDA;
    const END_OF_IMAGE: [u8; 2] = [0xFF, 0xD9];
    let mut position = 2; // after SOI
    loop {
        // Skip fill bytes before the marker code.
        while bytes.get(position) == Some(&0xFF) && bytes.get(position + 1) == Some(&0xFF) {
            position += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(position), bytes.get(position + 1)) else {
            return false;
        };
        position += 2;
        let standalone = marker == 0x01 || (0xD0..=0xD7).contains(&marker);
        if standalone {
            continue;
        }
        let (Some(&high), Some(&low)) = (bytes.get(position), bytes.get(position + 1)) else {
            return false;
        };
        position += usize::from(u16::from_be_bytes([high, low]));
        if marker == START_OF_SCAN {
            return bytes
                .get(position..)
                .is_some_and(|scan| scan.windows(2).any(|pair| pair == END_OF_IMAGE));
        }
    }
}

/// Converts decoded pixels to RGB the way Pillow's `convert("RGB")` treats the mode Pillow
/// would have opened the file in. `gray16_clips`: 16-bit gray samples come from a PNG of
/// colour type 0 (Pillow mode `I;16`, clipped) rather than a gray+alpha PNG (high byte).
/// `None` for sample types no supported decoder produces (floating point).
fn to_pillow_rgb(image: DynamicImage, gray16_clips: bool) -> Option<RgbImage> {
    let (width, height) = (image.width(), image.height());
    let gray16_to_u8 = |v: u16| {
        if gray16_clips {
            v.min(255) as u8
        } else {
            high_byte(v)
        }
    };
    let raw: Vec<u8> = match image {
        DynamicImage::ImageRgb8(rgb) => return Some(rgb),
        DynamicImage::ImageLuma8(gray) => gray.as_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(gray_alpha) => gray_alpha
            .pixels()
            .flat_map(|pixel| {
                let [l, _alpha] = pixel.0;
                [l; 3]
            })
            .collect(),
        DynamicImage::ImageRgba8(rgba) => rgba
            .pixels()
            .flat_map(|pixel| {
                let [r, g, b, _alpha] = pixel.0;
                [r, g, b]
            })
            .collect(),
        DynamicImage::ImageLuma16(gray) => gray
            .as_raw()
            .iter()
            .flat_map(|&l| [gray16_to_u8(l); 3])
            .collect(),
        DynamicImage::ImageLumaA16(gray_alpha) => gray_alpha
            .pixels()
            .flat_map(|pixel| {
                let [l, _alpha] = pixel.0;
                [gray16_to_u8(l); 3]
            })
            .collect(),
        DynamicImage::ImageRgb16(rgb) => rgb.as_raw().iter().map(|&v| high_byte(v)).collect(),
        DynamicImage::ImageRgba16(rgba) => rgba
            .pixels()
            .flat_map(|pixel| {
                let [r, g, b, _alpha] = pixel.0;
                [high_byte(r), high_byte(g), high_byte(b)]
            })
            .collect(),
        _ => return None,
    };
    RgbImage::from_raw(width, height, raw)
}

/// The most significant byte of a 16-bit sample (Pillow's `;16B` unpackers).
fn high_byte(sample: u16) -> u8 {
    (sample >> 8) as u8
}

/// Maps a decoder error to the variant that tells the user what to do.
fn decode_error(path: PathBuf, err: ImageError) -> PreprocessError {
    match err {
        ImageError::Unsupported(unsupported) => PreprocessError::UnsupportedFormat {
            path,
            detail: unsupported.to_string(),
        },
        other => corrupt(path, &other),
    }
}

fn corrupt(path: PathBuf, err: &dyn std::fmt::Display) -> PreprocessError {
    PreprocessError::Corrupt {
        path,
        detail: err.to_string(),
    }
}
