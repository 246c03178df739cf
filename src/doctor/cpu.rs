//! The `cpu` line of `doctor`: how many threads the CPU kernels use, the vector units found, and
//! which precision the CPU runs in and why (docs/performance.md, "CPU").

use super::{Check, Status};

/// The CPU flags that decide the CPU kernels' speed, in report order.
const FLAGS: [&str; 6] = [
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
];

/// The `cpu` check for this machine (flags from /proc/cpuinfo where it exists).
pub fn cpu_check() -> Check {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    describe(&cpuinfo, candle_core::utils::get_num_threads())
}

/// The check for `cpuinfo` (the text of /proc/cpuinfo) and `threads` CPU kernel threads.
fn describe(cpuinfo: &str, threads: usize) -> Check {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, list)| list.split_whitespace().collect())
        .unwrap_or_default();
    let found: Vec<&str> = FLAGS
        .iter()
        .copied()
        .filter(|flag| flags.contains(flag))
        .collect();
    let bf16_units = found
        .iter()
        .any(|f| *f == "avx512_bf16" || *f == "amx_bf16");
    let precision = if bf16_units {
        "CPU precision f32: this CPU has bf16 units (AVX512_BF16/AMX), but candle 0.11's CPU matmul \
         has no bf16 kernel, so bf16 runs slower than f32 and is not chosen by `auto`"
    } else {
        "CPU precision f32 (`auto`)"
    };
    Check {
        name: "cpu".into(),
        status: Status::Ok,
        message: format!(
            "{threads} kernel threads (RAYON_NUM_THREADS sets them), vector units: {}; {precision}",
            if found.is_empty() {
                "none of avx2/avx512".to_string()
            } else {
                found.join(" ")
            }
        ),
        remedy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_threads_units_and_the_precision() {
        let amx = "processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n";
        let check = describe(amx, 2);
        assert_eq!(check.status, Status::Ok);
        assert!(
            check.message.starts_with("2 kernel threads"),
            "{}",
            check.message
        );
        assert!(check.message.contains("avx2 avx512f avx512_bf16 amx_bf16;"));
        assert!(check.message.contains("no bf16 kernel"));
        let plain = describe("flags : fpu sse2 avx2\n", 8);
        assert!(plain.message.contains("units: avx2;"), "{}", plain.message);
        assert!(!plain.message.contains("bf16 units"));
        assert!(describe("", 1).message.contains("none of avx2/avx512"));
    }
}
