//! Fused CUDA kernels for BLIP, so that a decode step launches a few kernels per layer instead
//! of ~30 and no slow broadcast/strided candle kernel runs. Decode step: bias, residual and
//! LayerNorm in one pass; bias with GELU; embedding with LayerNorm; KV cache writes; one-token
//! self- and cross-attention; small-batch GEMV. Vision: head split with alignment padding,
//! softmax, head merge, patchify, embedding assembly. Search: log-softmax with beam scores,
//! per-row top-k, argmax.
//!
//! [`FusedOps`] is a handle the layers receive; on CPU (or a build without `cuda`) it is
//! disabled and the layers use composed candle ops, which the parity tests check against
//! transformers. Each kernel method assumes [`FusedOps::enabled`] and errors otherwise.

#[cfg(feature = "cuda")]
mod cuda;
mod table;

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor};

use crate::kernels::add::FusedAdd;
use crate::kernels::attention::FusedAttention;
use crate::kernels::gelu::FusedGelu;

/// Geometry of one layer's self-attention cache buffer `(2, rows, heads, cap, head_dim)`.
#[derive(Debug, Clone, Copy)]
pub struct CacheGeometry {
    pub rows: usize,
    pub heads: usize,
    pub cap: usize,
    pub head_dim: usize,
}

/// Geometry of a head split: `(batch*tokens, nproj*heads*head_dim)` projection output + bias
/// -> `(nproj, batch, heads, padded, head_dim)`, rows `tokens..padded` zero.
#[derive(Debug, Clone, Copy)]
pub struct SplitGeometry {
    pub batch: usize,
    pub tokens: usize,
    pub padded: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub nproj: usize,
}

/// Handle to the compiled fused kernels (none on CPU).
#[derive(Debug, Clone, Default)]
pub struct FusedOps {
    #[cfg(feature = "cuda")]
    kernels: Option<Arc<cuda::Kernels>>,
    #[cfg(not(feature = "cuda"))]
    kernels: Option<Arc<()>>,
    /// Kernels with a backward pass (training); the composed layers call them where they apply.
    attention: FusedAttention,
    gelu: FusedGelu,
    /// Bias adds in one vectorized pass (the projections whose bias no later kernel takes).
    add: FusedAdd,
}

impl FusedOps {
    /// Compiles and loads the kernels when `device` is a CUDA device; disabled otherwise.
    pub fn for_device(device: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = device {
            return Ok(Self {
                kernels: Some(Arc::new(cuda::Kernels::load(dev)?)),
                // The vision encoder's attention (no cache) runs on the training kernel's forward.
                attention: FusedAttention::for_device(device)?,
                gelu: FusedGelu::disabled(),
                add: FusedAdd::for_device(device)?,
            });
        }
        let _ = device;
        Ok(Self::default())
    }

    /// A disabled handle: every layer takes the composed path.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// For training: the composed (differentiable) path everywhere, with the kernels that have
    /// a backward pass (attention) on a CUDA device.
    pub fn for_training(device: &Device) -> Result<Self> {
        Ok(Self {
            attention: FusedAttention::for_device(device)?,
            gelu: FusedGelu::for_device(device)?,
            ..Self::default()
        })
    }

    /// The FlashAttention kernels (forward and backward; disabled on CPU and in [`Self::disabled`]).
    pub fn attention(&self) -> &FusedAttention {
        &self.attention
    }

    /// The bias + GELU kernels with a backward pass (disabled unless [`Self::for_training`]).
    pub fn gelu(&self) -> &FusedGelu {
        &self.gelu
    }

    /// `x + bias` broadcast over the rows: the add kernel where it applies, else candle's.
    pub fn add_bias(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        match self.add.add(x, Some(bias), None)? {
            Some(y) => Ok(y),
            None => x.broadcast_add(bias),
        }
    }

    /// Whether the fused kernels are in use.
    pub fn enabled(&self) -> bool {
        self.kernels.is_some()
    }
}

#[cfg(feature = "cuda")]
impl FusedOps {
    fn kernels(&self) -> Result<&cuda::Kernels> {
        match &self.kernels {
            Some(k) => Ok(k),
            None => candle_core::bail!("fused kernels are not enabled"),
        }
    }

    /// `LayerNorm(x + bias + residual)`; `params = [bias; gamma; beta]` `(3, d)`.
    pub fn bias_residual_layer_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        params: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let op = cuda::BiasResidualLayerNorm {
            kernels: self.kernels()?,
            eps: eps as f32,
            two_outputs: false,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&residual.contiguous()?, params, &op)
    }

    /// `h = x + bias + residual` and `LayerNorm(h)` (with `params = [bias; gamma; beta]`), as one
    /// `(2, ..)` tensor: index 0 is `h`, 1 its LayerNorm.
    pub fn bias_residual_layer_norm2(
        &self,
        x: &Tensor,
        residual: &Tensor,
        params: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let op = cuda::BiasResidualLayerNorm {
            kernels: self.kernels()?,
            eps: eps as f32,
            two_outputs: true,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&residual.contiguous()?, params, &op)
    }

    /// `LayerNorm(x)` with `params = [gamma; beta]` `(2, d)`.
    pub fn layer_norm(&self, x: &Tensor, params: &Tensor, eps: f64) -> Result<Tensor> {
        x.contiguous()?.apply_op2_no_bwd(
            params,
            &cuda::LayerNormRows {
                kernels: self.kernels()?,
                eps: eps as f32,
            },
        )
    }

    /// `LayerNorm(word[ids] + position)` for ids `(R, T)` at positions `past..past+T`;
    /// `table = [positions; gamma; beta]` `(P + 2, d)`. Returns `(R, T, d)`.
    pub fn embed_layer_norm(
        &self,
        ids: &Tensor,
        word: &Tensor,
        table: &Tensor,
        past: usize,
        eps: f64,
    ) -> Result<Tensor> {
        let (r, t) = ids.dims2()?;
        let (rows_p2, d) = table.dims2()?;
        let op = cuda::EmbedLayerNorm {
            kernels: self.kernels()?,
            eps: eps as f32,
            t,
            past,
            max_positions: rows_p2.saturating_sub(2),
        };
        ids.contiguous()?
            .flatten_all()?
            .apply_op3_no_bwd(word, table, &op)?
            .reshape((r, t, d))
    }

    /// `gelu_erf(x + bias)`.
    pub fn bias_gelu(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op2_no_bwd(
            bias,
            &cuda::BiasEpilogue {
                kernels: self.kernels()?,
                to_f32: false,
            },
        )
    }

    /// `x + bias` as f32.
    pub fn bias_to_f32(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op2_no_bwd(
            bias,
            &cuda::BiasEpilogue {
                kernels: self.kernels()?,
                to_f32: true,
            },
        )
    }

    /// Whether [`FusedOps::self_attention_step`] supports `len` cached positions.
    pub fn self_attention_fits(&self, len: usize, head_dim: usize) -> bool {
        cuda::SelfAttentionStep::fits(len, head_dim)
    }

    /// One decode step of self-attention: writes the keys/values of `qkv` `(rows, 3*d)`
    /// (projection without bias) plus `bias` into `cache` at position `len - 1`, then attends
    /// each row's query over the first `len` cached positions; `(rows, d)`.
    pub fn self_attention_step(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        cache: &Tensor,
        geometry: CacheGeometry,
        len: usize,
    ) -> Result<Tensor> {
        let op = cuda::SelfAttentionStep {
            kernels: self.kernels()?,
            geometry,
            len,
        };
        qkv.apply_op3_no_bwd(bias, cache, &op)
    }

    /// Whether [`FusedOps::cross_attention_step`] supports `group` queries over `n` image tokens.
    pub fn cross_attention_fits(&self, group: usize, n: usize, head_dim: usize) -> bool {
        cuda::CrossAttentionStep::fits(group, n, head_dim)
    }

    /// Cross-attention of `q` `(images*group, d)` (projection without bias) plus `bias` over
    /// image keys/values `(2, images, heads, n, dh)`; `(images*group, d)`.
    pub fn cross_attention_step(
        &self,
        q: &Tensor,
        bias: &Tensor,
        image_kv: &Tensor,
        group: usize,
        valid: usize,
    ) -> Result<Tensor> {
        let op = cuda::CrossAttentionStep {
            kernels: self.kernels()?,
            group,
            valid,
        };
        q.contiguous()?.apply_op3_no_bwd(bias, image_kv, &op)
    }

    /// `(batch*tokens, nproj*heads*dh)` (projection without bias) + bias ->
    /// `(nproj, batch, heads, padded, dh)`, rows `tokens..padded` zero.
    pub fn split_heads(
        &self,
        x: &Tensor,
        bias: &Tensor,
        geometry: SplitGeometry,
    ) -> Result<Tensor> {
        let op = cuda::SplitHeads {
            kernels: self.kernels()?,
            geometry,
        };
        x.contiguous()?.apply_op2_no_bwd(bias, &op)
    }

    /// As [`FusedOps::split_heads`], written into `dst` (a contiguous view of that shape).
    pub fn split_heads_into(
        &self,
        dst: &Tensor,
        x: &Tensor,
        bias: &Tensor,
        geometry: SplitGeometry,
    ) -> Result<()> {
        let op = cuda::SplitHeadsInto {
            kernels: self.kernels()?,
            geometry,
        };
        dst.inplace_op3(&x.contiguous()?, bias, &op)
    }

    /// `(b, heads, n, dh)` -> `(b, n, heads*dh)`.
    pub fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&cuda::MergeHeads {
            kernels: self.kernels()?,
        })
    }

    /// Softmax over the first `valid` columns of the last dimension (the rest written as 0),
    /// when that dimension is at most 1024 wide (`None` otherwise).
    pub fn softmax_last_dim(&self, x: &Tensor, valid: usize) -> Result<Option<Tensor>> {
        if x.dim(candle_core::D::Minus1)? > 1024 {
            return Ok(None);
        }
        Ok(Some(x.contiguous()?.apply_op1_no_bwd(
            &cuda::SoftmaxRows {
                kernels: self.kernels()?,
                valid,
            },
        )?))
    }

    /// `x . w^T (+ bias) (GELU)` through the small-batch GEMV kernel, when `x` has at most 8
    /// rows and suitable alignment (`None` otherwise: use a GEMM).
    pub fn gemv(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        gelu: bool,
        f32_out: bool,
    ) -> Result<Option<Tensor>> {
        let elem = x.dtype().size_in_bytes();
        if x.dtype() != w.dtype() || !cuda::Gemv::applies(x.layout(), w.layout(), elem) {
            return Ok(None);
        }
        let op = cuda::Gemv {
            kernels: self.kernels()?,
            has_bias: bias.is_some(),
            gelu,
            f32_out,
        };
        Ok(Some(x.apply_op3_no_bwd(w, bias.unwrap_or(w), &op)?))
    }

    /// `x . dq(w)^T (+ bias) (GELU)` with `weight` a GGML-quantized `(out, in)` matrix read in its
    /// blocks (q8_0, q4_0, q4k, q6k), when `x` has at most 8 rows and suitable alignment (`None`
    /// otherwise: dequantize and multiply densely).
    pub fn quantized_gemv(
        &self,
        x: &Tensor,
        weight: &QTensor,
        bias: Option<&Tensor>,
        gelu: bool,
        f32_out: bool,
    ) -> Result<Option<Tensor>> {
        let elem = x.dtype().size_in_bytes();
        if bias.is_some_and(|b| b.dtype() != x.dtype())
            || !cuda::QuantizedGemv::applies(x.layout(), weight, elem)
        {
            return Ok(None);
        }
        let op = cuda::QuantizedGemv {
            kernels: self.kernels()?,
            weight,
            has_bias: bias.is_some(),
            gelu,
            f32_out,
        };
        Ok(Some(x.apply_op2_no_bwd(bias.unwrap_or(x), &op)?))
    }

    /// f32 pixels `(b, 3, s, s)` -> patch rows `(b, (s/p)^2, 3*p*p)` in `dtype` (`None` unless
    /// the pixels are f32).
    pub fn patchify(&self, pixels: &Tensor, patch: usize, dtype: DType) -> Result<Option<Tensor>> {
        if pixels.dtype() != DType::F32 {
            return Ok(None);
        }
        let op = cuda::Patchify {
            kernels: self.kernels()?,
            patch,
            dtype,
        };
        Ok(Some(pixels.contiguous()?.apply_op1_no_bwd(&op)?))
    }

    /// Patch projections `(b, np, d)` (without bias) -> `(b, 1 + np, d)` embeddings with bias,
    /// class token and positions from `table = [bias; class; positions]`.
    pub fn vision_embed(&self, patches: &Tensor, table: &Tensor) -> Result<Tensor> {
        patches.contiguous()?.apply_op2_no_bwd(
            table,
            &cuda::VisionEmbed {
                kernels: self.kernels()?,
            },
        )
    }

    /// Sets column `col` of the contiguous f32 matrix `x` to `value`, in place.
    pub fn set_column(&self, x: &Tensor, col: usize, value: f32) -> Result<()> {
        x.inplace_op1(&cuda::SetColumn {
            kernels: self.kernels()?,
            col,
            value,
        })
    }

    /// First index of each row's maximum of the f32 `(rows, n)` matrix, u32 `(rows,)`.
    pub fn argmax_rows(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&cuda::ArgmaxRows {
            kernels: self.kernels()?,
        })
    }

    /// Beam step scores `log_softmax(logits) + running` (f32, `(rows, vocab)`), with column
    /// `blocked` at -inf.
    pub fn beam_scores(
        &self,
        logits: &Tensor,
        running: &Tensor,
        blocked: Option<u32>,
    ) -> Result<Tensor> {
        let op = cuda::BeamScores {
            kernels: self.kernels()?,
            blocked,
        };
        logits
            .contiguous()?
            .apply_op2_no_bwd(&running.contiguous()?, &op)
    }

    /// Per row the `k` largest entries of f32 `scores`, as `(rows, 2, k)`: values, then indices
    /// (exact as f32). `None` when `k` exceeds the kernel's limit.
    pub fn top_k_rows(&self, scores: &Tensor, k: usize) -> Result<Option<Tensor>> {
        if k > cuda::TOPK_MAX {
            return Ok(None);
        }
        Ok(Some(scores.contiguous()?.apply_op1_no_bwd(
            &cuda::TopKRows {
                kernels: self.kernels()?,
                k,
            },
        )?))
    }
}

/// CPU builds: the layers never call these (the handle is disabled); they exist so that the
/// layer code compiles the same way for every build.
#[cfg(not(feature = "cuda"))]
impl FusedOps {
    fn unavailable<T>(&self) -> Result<T> {
        candle_core::bail!("fused kernels need a build with the `cuda` feature")
    }
    pub fn bias_residual_layer_norm(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: f64,
    ) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn bias_residual_layer_norm2(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: f64,
    ) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn layer_norm(&self, _: &Tensor, _: &Tensor, _: f64) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn embed_layer_norm(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: f64,
    ) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn bias_gelu(&self, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn bias_to_f32(&self, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn self_attention_fits(&self, _: usize, _: usize) -> bool {
        false
    }
    pub fn self_attention_step(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: CacheGeometry,
        _: usize,
    ) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn cross_attention_fits(&self, _: usize, _: usize, _: usize) -> bool {
        false
    }
    pub fn cross_attention_step(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
        _: usize,
    ) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn split_heads(&self, _: &Tensor, _: &Tensor, _: SplitGeometry) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn split_heads_into(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: SplitGeometry,
    ) -> Result<()> {
        self.unavailable()
    }
    pub fn merge_heads(&self, _: &Tensor) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn softmax_last_dim(&self, _: &Tensor, _: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub fn gemv(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: Option<&Tensor>,
        _: bool,
        _: bool,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub fn quantized_gemv(
        &self,
        _: &Tensor,
        _: &QTensor,
        _: Option<&Tensor>,
        _: bool,
        _: bool,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub fn patchify(&self, _: &Tensor, _: usize, _: DType) -> Result<Option<Tensor>> {
        Ok(None)
    }
    pub fn vision_embed(&self, _: &Tensor, _: &Tensor) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn set_column(&self, _: &Tensor, _: usize, _: f32) -> Result<()> {
        self.unavailable()
    }
    pub fn argmax_rows(&self, _: &Tensor) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn beam_scores(&self, _: &Tensor, _: &Tensor, _: Option<u32>) -> Result<Tensor> {
        self.unavailable()
    }
    pub fn top_k_rows(&self, _: &Tensor, _: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
}
