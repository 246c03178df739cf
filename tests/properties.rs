//! Property tests over every reader of untrusted input: the config parser and `--set` overrides, the
//! manifest / COCO / LAVIS readers, the safetensors and GGUF header readers, and the image entry
//! point. For inputs built from valid seeds with bytes overwritten, cut short or made up, each reader
//! returns (never panics), every rejection is the reader's typed error, and no single allocation
//! during the call is larger than a stated bound: a length field claiming gigabytes is refused
//! before anything of that size is allocated.
//!
//! The bound is measured, not assumed: this test binary's allocator records the largest request
//! made by the thread that is inside a reader (`Largest`). Case counts are small (`CASES`) so the
//! whole set runs in seconds on 2 cores; `PROPTEST_CASES=N` runs more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use vlmrun::config::{self, ConfigChoice, ConfigRequest, DataConfig, DataSource};
use vlmrun::data::dataset;
use vlmrun::models::blip::verify;
use vlmrun::models::gguf::GgufFile;
use vlmrun::preprocess::decode;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 96;

/// Slack every bound allows for the readers' fixed-size buffers (BufReader, decoder tables).
const SLACK: usize = 1 << 20;

// ---- The allocation bound: the largest single request of this thread while it is measured. ----

struct Tracking;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; `record` only reads and writes
// two const-initialised thread-locals (no allocation, no re-entry).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    let out = f();
    MEASURING.with(|measuring| measuring.set(false));
    (out, LARGEST.with(Cell::get))
}

// ---- Inputs: a valid seed with some bytes overwritten, cut short, or bytes made up. ----

/// Edits to apply to a seed: (position as a fraction of the length, new byte) pairs, then a cut.
fn damaged(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (
        prop::collection::vec((0..len.max(1), any::<u8>()), 0..8),
        prop_oneof![3 => Just(len), 1 => 0..=len],
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(move |(edits, cut, tail)| {
            let mut bytes = seed.clone();
            for (at, byte) in edits {
                if at < bytes.len() {
                    bytes[at] = byte;
                }
            }
            bytes.truncate(cut);
            bytes.extend(tail);
            bytes
        })
}

/// A little-endian u64 length field set to a huge value at `at` (the claim a hostile header makes).
fn with_huge_length(mut bytes: Vec<u8>, at: usize, claim: u64) -> Vec<u8> {
    if at + 8 <= bytes.len() {
        bytes[at..at + 8].copy_from_slice(&claim.to_le_bytes());
    }
    bytes
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---- The config parser and `--set`. ----

/// YAML-ish text from the schema's own keys and values of every kind.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "device",
        "precision",
        "quantization",
        "seed",
        "model",
        "  source",
        "data",
        "  source",
        "  path",
        "  limit",
        "generation",
        "  num_beams",
        "  max_length",
        "  prompt",
        "preprocess",
        "  workers",
        "output",
        "  dir",
        "train",
        "  lr",
        "  batch_size",
        "nonsense",
    ]);
    let value = prop_oneof![
        Just(String::new()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        Just("[1, 2".to_string()),
        Just("{a: b}".to_string()),
        Just("\"unterminated".to_string()),
        Just("&anchor *alias".to_string()),
        Just("cuda:99999999999999999999".to_string()),
        "[a-z0-9_:./ -]{0,12}",
    ];
    prop::collection::vec((key, value), 0..10).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(key, value)| format!("{key}: {value}\n"))
            .collect()
    })
}

fn set_argument() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "generation.num_beams",
        "generation.max_length",
        "generation.batch_size",
        "generation.prompt",
        "preprocess.workers",
        "train.lr",
        "data.limit",
        "output.dir",
        "model",
        "generation",
        "generation.num_beams.x",
        "",
        ".",
        "train..lr",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| x.to_string()),
        "[a-z0-9 .:=\\[\\]{}-]{0,10}",
        Just("18446744073709551616".to_string()),
    ];
    (key, prop::bool::ANY, value).prop_map(|(key, equals, value)| {
        if equals {
            format!("{key}={value}")
        } else {
            format!("{key}{value}")
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_config_parser_and_set_overrides_return_a_typed_result(
        text in config_text(),
        sets in prop::collection::vec(set_argument(), 0..4),
    ) {
        let path = Path::new("fuzz.yaml");
        let ((), largest) = largest_allocation(|| {
            let Ok(loaded) = config::parse_str(&text, path) else { return };
            let request = ConfigRequest { sets: sets.clone(), ..ConfigRequest::default() };
            match config::resolve_loaded(loaded, ConfigChoice::BuiltIn, &request) {
                Ok(resolved) => {
                    // Whatever was accepted is inside the bounds the runs rely on.
                    let generation = &resolved.config.generation;
                    assert!(generation.num_beams >= 1 && generation.num_beams <= config::bounds::MAX_BEAMS);
                    assert!(generation.max_length <= config::bounds::MAX_LENGTH);
                    assert!(!resolved.config.output.dir.as_os_str().is_empty());
                }
                Err(err) => assert!(!err.to_string().is_empty()),
            }
        });
        prop_assert!(largest <= 64 * (text.len() + 1) + SLACK, "{largest} bytes for {} bytes of text", text.len());
    }
}

// ---- The dataset readers. ----

/// JSON documents from the readers' own vocabulary, nested a little.
fn dataset_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "a.png",
            "",
            "../x.png",
            "/etc",
            "img",
            "caf\u{e9}.jpg"
        ])
        .prop_map(serde_json::Value::from),
    ];
    let key = prop::sample::select(vec![
        "id",
        "image",
        "references",
        "caption",
        "images",
        "annotations",
        "file_name",
        "image_id",
        "split",
        "cocoid",
        "other",
    ]);
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|map| {
                serde_json::Value::Object(
                    map.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            }),
        ]
    })
}

fn dataset_text() -> impl Strategy<Value = String> {
    prop_oneof![
        // One document (COCO / LAVIS) or one per line (manifest).
        dataset_json().prop_map(|v| v.to_string()),
        prop::collection::vec(dataset_json(), 0..5)
            .prop_map(|lines| lines.iter().map(|v| format!("{v}\n")).collect()),
        // Text that is not JSON at all.
        "[\\[\\]{}\":,a-z0-9 \n]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_dataset_readers_return_a_typed_result(
        text in dataset_text(),
        source in prop::sample::select(vec![DataSource::Manifest, DataSource::Coco, DataSource::Lavis]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_temp(dir.path(), "data.json", text.as_bytes());
        let data = DataConfig { source, path, ..DataConfig::default() };
        let (result, largest) = largest_allocation(|| dataset::load(&data));
        match result {
            Ok(items) => {
                // Every item is one distinct id: nothing mixed, nothing dropped twice.
                let mut ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), items.len());
            }
            // Named with the file, never a bare parser message.
            Err(err) => prop_assert!(err.to_string().contains("data.json"), "{err}"),
        }
        prop_assert!(largest <= 64 * (text.len() + 1) + SLACK, "{largest} bytes for {} bytes", text.len());
    }
}

// ---- The safetensors header reader. ----

fn safetensors_seed() -> Vec<u8> {
    let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 12]);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_safetensors_header_reader_is_bounded_by_the_file(
        bytes in prop_oneof![
            4 => damaged(safetensors_seed()),
            1 => (any::<u64>(),).prop_map(|(claim,)| with_huge_length(safetensors_seed(), 0, claim)),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_temp(dir.path(), "model.safetensors", &bytes);
        let (result, largest) = largest_allocation(|| verify::check_file(&path));
        if let Err(err) = &result {
            prop_assert!(err.to_string().contains("model.safetensors"), "{err}");
        }
        prop_assert!(largest <= 64 * bytes.len() + SLACK, "{largest} bytes for a {}-byte file", bytes.len());
    }
}

// ---- The GGUF header reader. ----

/// A GGUF v3 file: one u32 metadata entry (general.alignment = 32), one 4-element F32 tensor.
fn gguf_seed() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes()); // tensors
    bytes.extend(1u64.to_le_bytes()); // metadata entries
    let key = b"general.alignment";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(4u32.to_le_bytes()); // value type u32
    bytes.extend(32u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes()); // name length
    bytes.extend(b"w");
    bytes.extend(1u32.to_le_bytes()); // dimensions
    bytes.extend(4u64.to_le_bytes());
    bytes.extend(0u32.to_le_bytes()); // F32
    bytes.extend(0u64.to_le_bytes()); // offset
    while !bytes.len().is_multiple_of(32) {
        bytes.push(0);
    }
    bytes.extend([0u8; 16]);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_gguf_header_reader_is_bounded_by_the_file(
        bytes in prop_oneof![
            4 => damaged(gguf_seed()),
            // A huge tensor count, key length, or dimension.
            1 => (prop::sample::select(vec![8usize, 16, 24, 57, 70]), any::<u64>())
                .prop_map(|(at, claim)| with_huge_length(gguf_seed(), at, claim)),
            // Any alignment, 0 included.
            1 => (0u32..4).prop_map(|alignment| {
                let mut bytes = gguf_seed();
                bytes[53..57].copy_from_slice(&alignment.to_le_bytes());
                bytes
            }),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_temp(dir.path(), "m.gguf", &bytes);
        let (result, largest) = largest_allocation(|| GgufFile::open(&path).map(|file| file.size()));
        if let Err(err) = &result {
            prop_assert!(err.to_string().contains("m.gguf"), "{err}");
        }
        prop_assert!(largest <= 64 * bytes.len() + SLACK, "{largest} bytes for a {}-byte file", bytes.len());
    }
}

// ---- The image entry point. ----

fn image_seeds() -> Vec<Vec<u8>> {
    [
        "palette.png",
        "gray16.png",
        "jpeg420.jpg",
        "webp_lossless.webp",
        "orientation6.png",
    ]
    .iter()
    .map(|name| std::fs::read(Path::new(ROOT).join("tests/fixtures/decode").join(name)).unwrap())
    .collect()
}

/// Pixels an image may have here: decoding allocates at most a few buffers of this many RGBA16
/// pixels.
const MAX_PIXELS: u64 = 1 << 16;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_image_decoder_is_bounded_by_the_pixel_limit(
        bytes in prop::sample::select(image_seeds()).prop_flat_map(damaged),
    ) {
        let (result, largest) =
            largest_allocation(|| decode::decode_rgb(&bytes, Path::new("fuzz.img"), MAX_PIXELS));
        match result {
            Ok(image) => {
                let pixels = u64::from(image.width()) * u64::from(image.height());
                prop_assert!(pixels <= MAX_PIXELS);
                // The measurement sees the decoded image's own buffer.
                prop_assert!(largest as u64 >= 3 * pixels, "{largest} bytes measured for {pixels} pixels");
            }
            Err(err) => prop_assert!(err.to_string().contains("fuzz.img"), "{err}"),
        }
        let bound = 8 * MAX_PIXELS as usize + 64 * bytes.len() + SLACK;
        prop_assert!(largest <= bound, "{largest} bytes (bound {bound})");
    }
}

/// A PNG whose header claims 60000 x 60000 pixels is refused before its pixels are allocated.
#[test]
fn an_image_header_claiming_billions_of_pixels_allocates_nothing_of_that_size() {
    let mut png = std::fs::read(Path::new(ROOT).join("tests/fixtures/decode/palette.png")).unwrap();
    // IHDR width and height (big-endian) right after the signature, length and tag.
    png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let (result, largest) =
        largest_allocation(|| decode::decode_rgb(&png, Path::new("huge.png"), 89_478_485));
    let err = result.unwrap_err().to_string();
    assert!(err.contains("60000x60000"), "{err}");
    assert!(largest < SLACK, "{largest} bytes");
}

/// GGUF fields that candle's reader divides by or multiplies with: an alignment of 0 and tensor
/// dimensions whose product overflows are refused as errors, not panics.
#[test]
fn gguf_alignment_zero_and_overflowing_dimensions_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Damage); 4] = [
        (
            "alignment 0",
            Box::new(|b: &mut Vec<u8>| b[53..57].copy_from_slice(&0u32.to_le_bytes())),
        ),
        (
            "alignment 3",
            Box::new(|b: &mut Vec<u8>| b[53..57].copy_from_slice(&3u32.to_le_bytes())),
        ),
        (
            "dimension 2^63",
            Box::new(|b: &mut Vec<u8>| b[70..78].copy_from_slice(&(1u64 << 63).to_le_bytes())),
        ),
        (
            "dimension u64::MAX",
            Box::new(|b: &mut Vec<u8>| b[70..78].copy_from_slice(&u64::MAX.to_le_bytes())),
        ),
    ];
    for (name, damage) in cases {
        let mut bytes = gguf_seed();
        damage(&mut bytes);
        let path = write_temp(dir.path(), "m.gguf", &bytes);
        let outcome = std::panic::catch_unwind(|| GgufFile::open(&path).map(|file| file.size()));
        let result = outcome.unwrap_or_else(|_| panic!("{name}: the reader panicked"));
        if name != "alignment 3" {
            assert!(result.is_err(), "{name}: accepted");
        }
    }
}

// ---- The parquet reader (feature `parquet`). ----

/// The two committed parquet fixtures (pyarrow, the Hugging Face datasets layout).
#[cfg(feature = "parquet")]
fn parquet_seeds() -> Vec<Vec<u8>> {
    ["captions_list.parquet", "captions_text.parquet"]
        .iter()
        .map(|name| {
            std::fs::read(Path::new(ROOT).join("tests/fixtures/parquet").join(name)).unwrap()
        })
        .collect()
}

/// A seed with bytes overwritten in its footer (the thrift-encoded file metadata and its length,
/// the last `8 + length` bytes), where every count and size the reader trusts is written.
#[cfg(feature = "parquet")]
fn damaged_footer(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    let footer = u32::from_le_bytes(seed[len - 8..len - 4].try_into().unwrap()) as usize + 8;
    let start = len.saturating_sub(footer);
    prop::collection::vec((start..len, any::<u8>()), 1..6).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        bytes
    })
}

/// A seed whose footer length field claims `claim` bytes.
#[cfg(feature = "parquet")]
fn with_footer_length(mut bytes: Vec<u8>, claim: u32) -> Vec<u8> {
    let len = bytes.len();
    bytes[len - 8..len - 4].copy_from_slice(&claim.to_le_bytes());
    bytes
}

/// Extracted row images go under the target directory, not the user's data directory; and the
/// panic hook's own allocations (the symbols of a backtrace under `RUST_BACKTRACE`, megabytes) are
/// not counted as the reader's: the parquet library panics on some damaged pages, which the reader
/// turns into its error.
#[cfg(feature = "parquet")]
fn parquet_setup() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        std::env::set_var(
            "VLMRUN_DATA_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("properties-parquet"),
        );
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let was = MEASURING.with(|measuring| measuring.replace(false));
            previous(info);
            MEASURING.with(|measuring| measuring.set(was));
        }));
    });
}

/// Bytes a parquet file may make the reader allocate at once, beyond [`SLACK`]: the fixtures'
/// pages decompress to a few KiB; a page or footer claiming more than the file could hold is
/// refused first.
#[cfg(feature = "parquet")]
const PARQUET_BOUND: usize = 4 << 20;

#[cfg(feature = "parquet")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_parquet_reader_returns_a_typed_result_within_the_bound(
        bytes in prop_oneof![
            3 => prop::sample::select(parquet_seeds()).prop_flat_map(damaged),
            3 => prop::sample::select(parquet_seeds()).prop_flat_map(damaged_footer),
            1 => (prop::sample::select(parquet_seeds()), any::<u32>())
                .prop_map(|(seed, claim)| with_footer_length(seed, claim)),
        ],
    ) {
        parquet_setup();
        let dir = tempfile::tempdir().unwrap();
        let path = write_temp(dir.path(), "data.parquet", &bytes);
        let data = DataConfig { source: DataSource::Parquet, path, ..DataConfig::default() };
        let outcome = std::panic::catch_unwind(|| largest_allocation(|| dataset::load(&data)));
        MEASURING.with(|measuring| measuring.set(false));
        let Ok((result, largest)) = outcome else {
            return Err(TestCaseError::fail(format!("the reader panicked on {} bytes", bytes.len())));
        };
        match result {
            Ok(items) => {
                let mut ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), items.len());
            }
            Err(err) => {
                // Named with the file, and an input error (exit 5) as every dataset problem is.
                prop_assert!(err.to_string().contains("data.parquet"), "{err}");
                prop_assert_eq!(vlmrun::error::Error::input(err).exit(), vlmrun::exit::Exit::Input);
            }
        }
        prop_assert!(largest <= PARQUET_BOUND + 64 * bytes.len() + SLACK, "{largest} bytes for a {}-byte file", bytes.len());
    }
}
