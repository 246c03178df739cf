//! Fused kernels for the decode step on CUDA (bias + residual + LayerNorm, bias + GELU,
//! embedding + LayerNorm, one-token self- and cross-attention, KV cache writes), so that a
//! decode step launches a few kernels per layer instead of ~30.
//!
//! [`FusedOps`] is a handle the layers receive; on CPU (or a build without `cuda`) it is
//! disabled and the layers use composed candle ops, which the parity tests check against
//! transformers. Each method assumes [`FusedOps::enabled`].

#[cfg(feature = "cuda")]
mod cuda;

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};

/// Geometry of one layer's self-attention cache buffer `(2, rows, heads, cap, head_dim)`.
#[derive(Debug, Clone, Copy)]
pub struct CacheGeometry {
    pub rows: usize,
    pub heads: usize,
    pub cap: usize,
    pub head_dim: usize,
}

/// Handle to the compiled fused kernels (none on CPU).
#[derive(Debug, Clone, Default)]
pub struct FusedOps {
    #[cfg(feature = "cuda")]
    kernels: Option<Arc<cuda::Kernels>>,
    #[cfg(not(feature = "cuda"))]
    kernels: Option<Arc<()>>,
}

impl FusedOps {
    /// Compiles the kernels when `device` is a CUDA device; disabled otherwise.
    pub fn for_device(device: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            return Ok(Self {
                kernels: Some(Arc::new(cuda::Kernels::compile()?)),
            });
        }
        let _ = device;
        Ok(Self::default())
    }

    /// A disabled handle: every layer takes the composed path.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Whether the fused kernels are in use.
    pub fn enabled(&self) -> bool {
        self.kernels.is_some()
    }

    /// Whether [`FusedOps::cross_attention_step`] supports `group` queries over `n` image tokens.
    pub fn cross_attention_fits(&self, group: usize, n: usize, head_dim: usize) -> bool {
        #[cfg(feature = "cuda")]
        return cuda::CrossAttentionStep::fits(group, n, head_dim);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (group, n, head_dim);
            false
        }
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
        };
        x.contiguous()?
            .apply_op3_no_bwd(&residual.contiguous()?, params, &op)
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

    /// Writes keys/values of `qkv` `(rows, 3*d)` (projection without bias) plus `bias` into
    /// `cache` at `pos`.
    pub fn kv_write(
        &self,
        cache: &Tensor,
        qkv: &Tensor,
        bias: &Tensor,
        geometry: CacheGeometry,
        pos: usize,
    ) -> Result<()> {
        let op = cuda::KvWrite {
            kernels: self.kernels()?,
            geometry,
            pos,
        };
        cache.inplace_op3(qkv, bias, &op)
    }

    /// Attention of each row's query (from `qkv` + `bias`) over the first `len` cached positions; `(rows, d)`.
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

    /// Cross-attention of `q` `(images*group, d)` (projection without bias) plus `bias` over
    /// image keys/values `(2, images, heads, n, dh)`; `(images*group, d)`.
    pub fn cross_attention_step(
        &self,
        q: &Tensor,
        bias: &Tensor,
        image_kv: &Tensor,
        group: usize,
    ) -> Result<Tensor> {
        let op = cuda::CrossAttentionStep {
            kernels: self.kernels()?,
            group,
        };
        q.contiguous()?.apply_op3_no_bwd(bias, image_kv, &op)
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
    pub fn kv_write(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: CacheGeometry,
        _: usize,
    ) -> Result<()> {
        self.unavailable()
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
    pub fn cross_attention_step(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: usize,
    ) -> Result<Tensor> {
        self.unavailable()
    }
}
