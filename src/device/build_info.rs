//! What this binary was built with: version, git revision, and (CUDA builds) the toolkit version and
//! the compute capability its kernels target. Recorded by build.rs.

/// vlmrun's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git revision of the source tree, `-dirty` when it had uncommitted changes.
pub const GIT_REV: &str = env!("VLMRUN_GIT_REV");

/// The CUDA side of this build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CudaBuild {
    /// Toolkit version nvcc reported, e.g. `13.0`.
    pub cuda_version: String,
    /// Compute capability the kernels were compiled for, e.g. `90`.
    pub compute_cap: String,
}

/// `Some` when this binary was compiled with `--features cuda`.
pub fn cuda_build() -> Option<CudaBuild> {
    #[cfg(feature = "cuda")]
    {
        Some(CudaBuild {
            cuda_version: env!("VLMRUN_CUDA_VERSION").to_string(),
            compute_cap: env!("VLMRUN_CUDA_COMPUTE_CAP").to_string(),
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        None
    }
}

/// Parses `13.0` or `12.4` into (major, minor).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// Parses a compute capability written `90`, `9.0` or `sm_90` into (major, minor).
pub fn parse_compute_cap(text: &str) -> Option<(u32, u32)> {
    let digits: String = text
        .trim()
        .trim_start_matches("sm_")
        .trim_end_matches('a')
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    if digits.len() < 2 {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_caps() {
        assert_eq!(parse_version("13.0"), Some((13, 0)));
        assert_eq!(parse_version("12"), Some((12, 0)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(parse_compute_cap("90"), Some((9, 0)));
        assert_eq!(parse_compute_cap("sm_90a"), Some((9, 0)));
        assert_eq!(parse_compute_cap("8.6"), Some((8, 6)));
        assert_eq!(parse_compute_cap("120"), Some((12, 0)));
        assert_eq!(parse_compute_cap("unknown"), None);
    }
}
