//! The page headers of a parquet column chunk, checked before the parquet library reads them: it
//! allocates a page's `uncompressed_page_size` (and snappy's claimed length) up front, so a
//! damaged header claiming gigabytes would be allocated before anything is decoded. Each header
//! is read here (Thrift compact protocol, the fields the check needs; the rest skipped) and a page
//! must lie inside its chunk and claim no more than its codec could produce from its bytes.

use std::io::{BufReader, Read, Seek, SeekFrom};

use parquet::basic::Compression;

/// Bytes snappy can produce per compressed byte, at most: its longest copy (64 bytes) takes
/// 3 bytes to encode, so 22 is a bound with room.
const SNAPPY_EXPANSION: u64 = 22;
/// Slack for a page's fixed overhead (a snappy preamble, a v2 page's levels).
const PAGE_SLACK: u64 = 1024;
/// Nesting a header may have (its structs hold structs of statistics, at most a few deep).
const MAX_DEPTH: usize = 16;

/// One column chunk: where it starts and how many bytes it has (checked to lie in the file).
pub(super) struct Chunk {
    pub start: u64,
    pub len: u64,
    pub codec: Compression,
}

/// Walks the pages of `chunk` in `file`: every header must parse, every page lie inside the
/// chunk, and its uncompressed size be one the codec can reach from its compressed size.
pub(super) fn check_chunk(file: &std::fs::File, chunk: &Chunk) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(8 << 10, file);
    let end = chunk.start + chunk.len;
    let mut at = chunk.start;
    let mut page = 0usize;
    while at < end {
        reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| format!("page {page}: {e}"))?;
        let mut counted = Counted {
            inner: &mut reader,
            read: 0,
        };
        let header = read_header(&mut counted).map_err(|e| format!("page {page}: {e}"))?;
        let (compressed, uncompressed) = (header.compressed, header.uncompressed);
        let body = at + counted.read;
        let compressed = u64::try_from(compressed)
            .map_err(|_| format!("page {page} claims {compressed} compressed bytes"))?;
        let uncompressed = u64::try_from(uncompressed)
            .map_err(|_| format!("page {page} claims {uncompressed} uncompressed bytes"))?;
        if body.saturating_add(compressed) > end {
            return Err(format!(
                "page {page} claims {compressed} bytes at byte {body}, past its column chunk's end at byte {end}"
            ));
        }
        let most = match chunk.codec {
            Compression::UNCOMPRESSED => compressed + PAGE_SLACK,
            _ => compressed.saturating_mul(SNAPPY_EXPANSION) + PAGE_SLACK,
        };
        if uncompressed > most {
            return Err(format!(
                "page {page} claims {uncompressed} bytes uncompressed from {compressed} compressed ({:?} cannot expand that much)",
                chunk.codec
            ));
        }
        at = body + compressed;
        page += 1;
    }
    Ok(())
}

/// The sizes of a `PageHeader` (fields 2 and 3).
struct Header {
    uncompressed: i64,
    compressed: i64,
}

/// A reader that counts what it read (the header's length).
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Counted<'_, R> {
    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| "the page header is cut short".to_string())?;
        self.read += 1;
        Ok(b[0])
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let copied = std::io::copy(&mut self.inner.by_ref().take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        self.read += copied;
        if copied < n {
            return Err("the page header is cut short".to_string());
        }
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift.min(63);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint in the page header is too long".to_string())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
}

/// Reads a `PageHeader` struct, keeping fields 2 (uncompressed_page_size) and 3
/// (compressed_page_size).
fn read_header<R: Read>(input: &mut Counted<R>) -> Result<Header, String> {
    let mut header = Header {
        uncompressed: -1,
        compressed: -1,
    };
    let mut last = 0i64;
    loop {
        let byte = input.byte()?;
        let kind = byte & 0x0f;
        if kind == 0 {
            break;
        }
        let delta = i64::from(byte >> 4);
        let id = if delta == 0 {
            input.zigzag()?
        } else {
            last + delta
        };
        last = id;
        match (id, kind) {
            (2, 5) => header.uncompressed = input.zigzag()?,
            (3, 5) => header.compressed = input.zigzag()?,
            _ => skip_value(input, kind, 0)?,
        }
    }
    if header.uncompressed < 0 || header.compressed < 0 {
        return Err(format!(
            "the page header has no valid sizes (uncompressed {}, compressed {})",
            header.uncompressed, header.compressed
        ));
    }
    Ok(header)
}

/// Skips one value of compact-protocol type `kind`.
fn skip_value<R: Read>(input: &mut Counted<R>, kind: u8, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("the page header nests too deep".to_string());
    }
    match kind {
        1 | 2 => Ok(()),
        3 => input.skip(1),
        4..=6 => input.varint().map(drop),
        7 => input.skip(8),
        8 => {
            let len = input.varint()?;
            input.skip(len)
        }
        9 | 10 => {
            let head = input.byte()?;
            let size = match head >> 4 {
                15 => input.varint()?,
                n => u64::from(n),
            };
            let element = head & 0x0f;
            for _ in 0..size {
                // Booleans in a list are one byte each.
                if element == 1 || element == 2 {
                    input.skip(1)?;
                } else {
                    skip_value(input, element, depth + 1)?;
                }
            }
            Ok(())
        }
        11 => {
            let size = input.varint()?;
            if size == 0 {
                return Ok(());
            }
            let types = input.byte()?;
            for _ in 0..size {
                for kind in [types >> 4, types & 0x0f] {
                    if kind == 1 || kind == 2 {
                        input.skip(1)?;
                    } else {
                        skip_value(input, kind, depth + 1)?;
                    }
                }
            }
            Ok(())
        }
        12 => {
            let mut last = 0i64;
            loop {
                let byte = input.byte()?;
                let kind = byte & 0x0f;
                if kind == 0 {
                    return Ok(());
                }
                let delta = i64::from(byte >> 4);
                last = if delta == 0 {
                    input.zigzag()?
                } else {
                    last + delta
                };
                skip_value(input, kind, depth + 1)?;
            }
        }
        other => Err(format!("the page header holds an unknown type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol PageHeader: type 0, the two sizes, and a nested data page header.
    fn header(uncompressed: i64, compressed: i64) -> Vec<u8> {
        let zigzag = |v: i64| -> Vec<u8> {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            let mut out = Vec::new();
            loop {
                let b = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    out.push(b);
                    return out;
                }
                out.push(b | 0x80);
            }
        };
        let mut bytes = vec![0x15];
        bytes.extend(zigzag(0));
        bytes.push(0x15);
        bytes.extend(zigzag(uncompressed));
        bytes.push(0x15);
        bytes.extend(zigzag(compressed));
        // field 5 (delta 2), a struct: field 1 i32 num_values = 3, stop.
        bytes.push(0x2c);
        bytes.push(0x15);
        bytes.extend(zigzag(3));
        bytes.push(0);
        bytes.push(0);
        bytes
    }

    fn check(bytes: &[u8], codec: Compression, len: u64) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        check_chunk(
            &file,
            &Chunk {
                start: 0,
                len,
                codec,
            },
        )
    }

    #[test]
    fn pages_inside_their_chunk_with_plausible_sizes_pass_and_the_rest_are_named() {
        let mut good = header(40, 10);
        good.extend([0u8; 10]);
        let second = header(10, 10);
        good.extend(&second);
        good.extend([0u8; 10]);
        assert_eq!(check(&good, Compression::SNAPPY, good.len() as u64), Ok(()));

        let mut huge = header(1 << 30, 10);
        huge.extend([0u8; 10]);
        let err = check(&huge, Compression::SNAPPY, huge.len() as u64).unwrap_err();
        assert!(
            err.contains("claims 1073741824 bytes uncompressed"),
            "{err}"
        );

        let mut past = header(10, 100);
        past.extend([0u8; 10]);
        let err = check(&past, Compression::UNCOMPRESSED, past.len() as u64).unwrap_err();
        assert!(err.contains("past its column chunk's end"), "{err}");

        let cut = header(10, 10);
        let err = check(&cut[..4], Compression::SNAPPY, 30).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
    }
}
