//! A walk over a GGUF file's metadata before candle's reader sees it, for the values that reader
//! trusts: `general.alignment` is a divisor there (0 panicked with "attempt to divide by zero"),
//! and a tensor's dimensions are multiplied (an overflowing product panicked in debug builds and
//! wrapped in release ones). Every length is checked against the bytes left in the file before
//! anything is read into memory, so a hostile header allocates nothing of the size it claims.

use std::io::Read;

/// Nesting of arrays in arrays allowed (GGUF files use 1).
const MAX_DEPTH: usize = 4;

/// Why a header is refused; the caller names the file.
pub type Refusal = String;

/// Checks the metadata of the GGUF bytes `reader` yields (`size` bytes in all): magic, version,
/// counts and every key and value, `general.alignment` non-zero. Returns the tensor count.
pub fn check_metadata(reader: &mut impl Read, size: u64) -> Result<u64, Refusal> {
    let mut walk = Walk {
        reader,
        left: size,
        wide: true,
    };
    let magic = walk.bytes::<4>()?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file (its first bytes are not \"GGUF\")".to_string());
    }
    let version = u32::from_le_bytes(walk.bytes::<4>()?);
    walk.wide = match version {
        1 => false,
        2 | 3 => true,
        other => return Err(format!("GGUF version {other} (this build reads 1 to 3)")),
    };
    let tensors = walk.length()?;
    let entries = walk.length()?;
    for _ in 0..entries {
        let key = walk.string()?;
        let kind = u32::from_le_bytes(walk.bytes::<4>()?);
        let value = walk.value(kind, 0)?;
        if key == "general.alignment" && value == Some(0) {
            return Err(
                "general.alignment is 0 (tensor data must be aligned to at least 1 byte)"
                    .to_string(),
            );
        }
    }
    Ok(tensors)
}

struct Walk<'a, R: Read> {
    reader: &'a mut R,
    /// Bytes of the file not read yet.
    left: u64,
    /// GGUF v2+: lengths are u64 (v1: u32).
    wide: bool,
}

impl<R: Read> Walk<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Refusal> {
        self.take(N as u64)?;
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|err| format!("header cut short ({err})"))?;
        Ok(buf)
    }

    /// Accounts for `count` bytes about to be read; refuses more than the file has.
    fn take(&mut self, count: u64) -> Result<(), Refusal> {
        if count > self.left {
            return Err(format!(
                "the header claims {count} more bytes, the file has {} left: truncated or not a GGUF file",
                self.left
            ));
        }
        self.left -= count;
        Ok(())
    }

    fn length(&mut self) -> Result<u64, Refusal> {
        Ok(if self.wide {
            u64::from_le_bytes(self.bytes::<8>()?)
        } else {
            u64::from(u32::from_le_bytes(self.bytes::<4>()?))
        })
    }

    /// Skips a length-prefixed string (keys are compared, so they are read: at most the file's
    /// remaining bytes, checked first).
    fn string(&mut self) -> Result<String, Refusal> {
        let len = self.length()?;
        self.take(len)?;
        let mut text = Vec::new();
        (&mut *self.reader)
            .take(len)
            .read_to_end(&mut text)
            .map_err(|err| format!("header cut short ({err})"))?;
        if text.len() as u64 != len {
            return Err("header cut short inside a string".to_string());
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    fn skip(&mut self, count: u64) -> Result<(), Refusal> {
        self.take(count)?;
        let copied = std::io::copy(&mut (&mut *self.reader).take(count), &mut std::io::sink())
            .map_err(|err| format!("header cut short ({err})"))?;
        if copied != count {
            return Err("header cut short".to_string());
        }
        Ok(())
    }

    /// Reads past one value of type `kind`; returns it when it is an unsigned or signed integer
    /// of at most 32 bits (what `general.alignment` may be), as candle reads it.
    fn value(&mut self, kind: u32, depth: usize) -> Result<Option<i64>, Refusal> {
        Ok(match kind {
            0 => Some(i64::from(self.bytes::<1>()?[0])),
            1 => Some(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Some(i64::from(u16::from_le_bytes(self.bytes::<2>()?))),
            3 => Some(i64::from(i16::from_le_bytes(self.bytes::<2>()?))),
            4 => Some(i64::from(u32::from_le_bytes(self.bytes::<4>()?))),
            5 => Some(i64::from(i32::from_le_bytes(self.bytes::<4>()?))),
            6 => {
                self.skip(4)?;
                None
            }
            7 => {
                self.skip(1)?;
                None
            }
            8 => {
                let len = self.length()?;
                self.skip(len)?;
                None
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
                }
                let element = u32::from_le_bytes(self.bytes::<4>()?);
                let count = self.length()?;
                // Each element takes at least one byte: a count past the file is refused at once.
                if count > self.left {
                    return Err(format!(
                        "an array claims {count} elements, the file has {} bytes left",
                        self.left
                    ));
                }
                for _ in 0..count {
                    self.value(element, depth + 1)?;
                }
                None
            }
            10..=12 => {
                self.skip(8)?;
                None
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(alignment_type: u32, alignment: &[u8]) -> Vec<u8> {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        for (key, kind, value) in [
            (&b"general.name"[..], 8u32, {
                let mut v = 3u64.to_le_bytes().to_vec();
                v.extend(b"abc");
                v
            }),
            (
                &b"general.alignment"[..],
                alignment_type,
                alignment.to_vec(),
            ),
        ] {
            bytes.extend((key.len() as u64).to_le_bytes());
            bytes.extend(key);
            bytes.extend(kind.to_le_bytes());
            bytes.extend(value);
        }
        bytes
    }

    #[test]
    fn alignment_zero_and_lengths_past_the_file_are_refused() {
        let good = header(4, &32u32.to_le_bytes());
        assert_eq!(
            check_metadata(&mut good.as_slice(), good.len() as u64),
            Ok(0)
        );
        let zero = header(4, &0u32.to_le_bytes());
        let err = check_metadata(&mut zero.as_slice(), zero.len() as u64).unwrap_err();
        assert!(err.contains("general.alignment is 0"), "{err}");
        let zero8 = header(0, &[0]);
        assert!(check_metadata(&mut zero8.as_slice(), zero8.len() as u64).is_err());

        let mut huge = good.clone();
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = check_metadata(&mut huge.as_slice(), huge.len() as u64).unwrap_err();
        assert!(err.contains("claims"), "{err}");
        assert!(check_metadata(&mut &b"GGML"[..], 4).is_err());
    }
}
