//! The one table of the fused kernels: every kernel of `kernels.cu` that the launcher loads,
//! by name. The CUDA launcher (`cuda.rs`) loads exactly [`typed_names`], [`qgemv_names`] and
//! [`SEARCH`], and indexes them by [`Kernel`]; a test reads `kernels.cu` and checks that it
//! defines every one of them and no other. Adding a kernel is one line in [`fused_kernels!`]'s invocation below, its
//! source in `kernels.cu`, its op in `cuda.rs` and its method (with the CPU stub) in `mod.rs`.

// Only the CUDA launcher reads the table outside the tests.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use candle_core::quantized::GgmlDType;
use candle_core::DType;

/// Declares the kernels instantiated per dtype (`<name>_<dtype>` in kernels.cu): the [`Kernel`]
/// enum and [`TYPED`], its names in the same order, from one list.
macro_rules! fused_kernels {
    ($($kernel:ident => $name:literal,)+) => {
        /// Kernels instantiated for f32, f16 and bf16 (`<name>_<dtype>` in kernels.cu).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kernel {
            $($kernel,)+
        }

        /// Each [`Kernel`] with its base name, in declaration order (`Kernel as usize` is the index).
        pub const TYPED: &[(Kernel, &str)] = &[$((Kernel::$kernel, $name),)+];
    };
}

fused_kernels! {
    BiasResidualLn => "bias_residual_ln",
    BiasResidualLn2 => "bias_residual_ln2",
    EmbedLn => "embed_ln",
    BiasGelu => "bias_gelu",
    BiasToF32 => "bias_to_f32",
    SelfAttnDecode => "self_attn_decode",
    CrossAttnDecode => "cross_attn_decode",
    CrossAttnCombine => "cross_attn_combine",
    SplitHeads => "split_heads",
    MergeHeads => "merge_heads",
    SoftmaxRows => "softmax_rows",
    Gemv => "gemv",
    GemvF32Out => "gemv_f32out",
    Patchify => "patchify",
    VisionEmbed => "vision_embed",
    LayerNormRows => "layer_norm_rows",
}

/// The element types of the typed kernels, with their name suffix.
pub const DTYPES: [(DType, &str); 3] = [
    (DType::F32, "f32"),
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
];

/// GGML formats the quantized GEMV reads directly (`qgemv_<format>[_f32out]_<dtype>`).
pub const QGEMV_FORMATS: [(GgmlDType, &str); 4] = [
    (GgmlDType::Q8_0, "q8_0"),
    (GgmlDType::Q4_0, "q4_0"),
    (GgmlDType::Q4K, "q4k"),
    (GgmlDType::Q6K, "q6k"),
];

/// The quantized GEMV's two outputs: in the activation dtype, then f32 (`_f32out`).
pub const QGEMV_OUTPUTS: [&str; 2] = ["", "_f32out"];

/// The search kernels, f32 only, each loaded once by its name.
pub const SEARCH: [&str; 4] = [
    "beam_scores_f32",
    "topk_rows_f32",
    "set_column_f32",
    "argmax_rows_f32",
];

/// Index of `(kernel, dtype)` in [`typed_names`]' order.
pub fn typed_index(kernel: Kernel, dtype: DType) -> Option<usize> {
    let d = DTYPES.iter().position(|(t, _)| *t == dtype)?;
    Some(kernel as usize * DTYPES.len() + d)
}

/// Index of `(format, f32_out, dtype)` in [`qgemv_names`]' order.
pub fn qgemv_index(format: GgmlDType, f32_out: bool, dtype: DType) -> Option<usize> {
    let f = QGEMV_FORMATS.iter().position(|(q, _)| *q == format)?;
    let d = DTYPES.iter().position(|(t, _)| *t == dtype)?;
    Some((f * QGEMV_OUTPUTS.len() + f32_out as usize) * DTYPES.len() + d)
}

/// The typed kernels' function names: `TYPED x DTYPES`, in that order.
pub fn typed_names() -> Vec<String> {
    TYPED
        .iter()
        .flat_map(|(_, base)| DTYPES.iter().map(move |(_, s)| format!("{base}_{s}")))
        .collect()
}

/// The quantized GEMV's function names: `QGEMV_FORMATS x QGEMV_OUTPUTS x DTYPES`, in that order.
pub fn qgemv_names() -> Vec<String> {
    let mut names = Vec::with_capacity(QGEMV_FORMATS.len() * QGEMV_OUTPUTS.len() * DTYPES.len());
    for (_, format) in QGEMV_FORMATS {
        for out in QGEMV_OUTPUTS {
            for (_, suffix) in DTYPES {
                names.push(format!("qgemv_{format}{out}_{suffix}"));
            }
        }
    }
    names
}

/// Every function the launcher loads from kernels.cu (it loads the three parts separately; the
/// union is what the test checks against the source).
#[cfg(test)]
pub fn function_names() -> Vec<String> {
    let mut names = typed_names();
    names.extend(qgemv_names());
    names.extend(SEARCH.iter().map(|s| s.to_string()));
    names
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SOURCE: &str = include_str!("kernels.cu");

    /// The `extern "C" __global__` functions kernels.cu defines, with its function-like
    /// `#define`s expanded (parameters substituted, `##` pasted) as the preprocessor does.
    fn defined_functions() -> BTreeSet<String> {
        let mut macros: Vec<(String, Vec<String>, String)> = Vec::new();
        let mut text = String::new();
        let mut logical = String::new();
        for line in SOURCE.lines() {
            if let Some(head) = line.trim_end().strip_suffix('\\') {
                logical.push_str(head);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let full = std::mem::take(&mut logical);
            match full.trim_start().strip_prefix("#define ") {
                Some(def) => {
                    let name: String = def.chars().take_while(|c| is_ident(*c)).collect();
                    if let Some(rest) = def[name.len()..].strip_prefix('(') {
                        let (params, body) = rest.split_once(')').unwrap();
                        let params = params.split(',').map(|p| p.trim().to_string()).collect();
                        macros.push((name, params, body.to_string()));
                    }
                }
                None => {
                    text.push_str(&full);
                    text.push('\n');
                }
            }
        }
        expand(&text, &macros)
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .map(|rest| rest.chars().take_while(|c| is_ident(*c)).collect())
            .collect()
    }

    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// `text` with every call of a macro in `macros` replaced by its expansion, recursively.
    fn expand(text: &str, macros: &[(String, Vec<String>, String)]) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| is_ident(c)) {
            out.push_str(&rest[..start]);
            let ident: String = rest[start..].chars().take_while(|c| is_ident(*c)).collect();
            let after = &rest[start + ident.len()..];
            let call = macros.iter().find(|(name, _, _)| *name == ident);
            match (call, after.strip_prefix('(')) {
                (Some((_, params, body)), Some(args)) => {
                    let (args, tail) = args.split_once(')').unwrap();
                    let args: Vec<&str> = args.split(',').map(str::trim).collect();
                    out.push_str(&expand(&substitute(body, params, &args), macros));
                    rest = tail;
                }
                _ => {
                    out.push_str(&ident);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// `body` with each parameter (a whole identifier) replaced by its argument, then pasted.
    fn substitute(body: &str, params: &[String], args: &[&str]) -> String {
        let mut out = String::new();
        let mut ident = String::new();
        for c in body.chars().chain(std::iter::once(' ')) {
            if is_ident(c) {
                ident.push(c);
                continue;
            }
            match params.iter().position(|p| *p == ident) {
                Some(i) => out.push_str(args[i]),
                None => out.push_str(&ident),
            }
            ident.clear();
            out.push(c);
        }
        out.replace("##", "")
    }

    #[test]
    fn the_table_names_exactly_the_functions_kernels_cu_defines() {
        let loaded: BTreeSet<String> = function_names().into_iter().collect();
        let defined = defined_functions();
        // The parse itself found the instantiations (a broken parse would find neither side).
        assert!(defined.contains("bias_residual_ln_bf16"), "{defined:?}");
        assert!(defined.contains("qgemv_q6k_f32out_f16"), "{defined:?}");
        let missing: Vec<_> = loaded.difference(&defined).collect();
        let unloaded: Vec<_> = defined.difference(&loaded).collect();
        assert!(
            missing.is_empty(),
            "loaded but not in kernels.cu: {missing:?}"
        );
        assert!(
            unloaded.is_empty(),
            "in kernels.cu but not in the table: {unloaded:?}"
        );
        assert_eq!(
            loaded.len(),
            function_names().len(),
            "a name is listed twice"
        );
    }

    #[test]
    fn indices_follow_the_load_order() {
        let typed = typed_names();
        for (kernel, base) in TYPED {
            for (dtype, suffix) in DTYPES {
                let i = typed_index(*kernel, dtype).unwrap();
                assert_eq!(typed[i], format!("{base}_{suffix}"));
            }
        }
        let qgemv = qgemv_names();
        for (format, q) in QGEMV_FORMATS {
            for (f32_out, out) in [(false, ""), (true, "_f32out")] {
                for (dtype, suffix) in DTYPES {
                    let i = qgemv_index(format, f32_out, dtype).unwrap();
                    assert_eq!(qgemv[i], format!("qgemv_{q}{out}_{suffix}"));
                }
            }
        }
        assert_eq!(typed_index(Kernel::Gemv, DType::F64), None);
        assert_eq!(qgemv_index(GgmlDType::Q5_1, false, DType::F32), None);
    }
}
