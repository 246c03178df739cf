//! CUDA implementations of the fused ops: candle custom ops launching the kernels of
//! `kernels.cu`, compiled once per model with NVRTC.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CpuStorage, CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use super::CacheGeometry;

/// Name under which the module is cached by the candle device.
const MODULE: &str = "vlmrun_blip_fused";
const SOURCE: &str = include_str!("kernels.cu");
/// Shared memory a block may use without opting in to more.
pub const MAX_SHARED_BYTES: usize = 48 * 1024;

/// The compiled PTX of `kernels.cu`.
#[derive(Debug)]
pub struct Kernels {
    ptx: String,
}

impl Kernels {
    /// Compiles the kernels with NVRTC (a few hundred milliseconds).
    pub fn compile() -> Result<Self> {
        let ptx = candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE).map_err(|e| {
            candle_core::Error::Msg(format!(
                "compiling vlmrun's fused CUDA kernels with NVRTC: {e}"
            ))
        })?;
        Ok(Self { ptx: ptx.to_src() })
    }

    fn func(
        &self,
        dev: &CudaDevice,
        base: &str,
        dtype: DType,
    ) -> Result<candle_core::cuda_backend::CudaFunc> {
        let suffix = match dtype {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            other => bail!("fused kernel {base}: unsupported dtype {other:?}"),
        };
        dev.get_or_load_custom_func(&format!("{base}_{suffix}"), MODULE, &self.ptx)
    }
}

/// The contiguous part of `slice` that `layout` covers.
fn view<'a, T>(slice: &'a CudaSlice<T>, layout: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("fused kernel: {what} must be contiguous"),
    }
}

fn grid_for(n: usize, block: u32) -> u32 {
    let blocks = n.div_ceil(block as usize).max(1);
    blocks.min(65_535 * 8) as u32
}

/// Runs `$body` with `$t` bound to the Rust element type of `$dtype`.
macro_rules! with_dtype {
    ($dtype:expr, $t:ident, $body:block) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            other => bail!("fused kernels support f32/f16/bf16, got {other:?}"),
        }
    };
}

fn no_cpu(name: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{name} is a CUDA kernel; CPU tensors take the composed path")
}

fn block_for_width(d: usize) -> u32 {
    if d >= 512 {
        256
    } else if d >= 128 {
        128
    } else {
        64
    }
}

/// `LayerNorm(x + bias + residual)` with `params = [bias; gamma; beta]` `(3, d)`.
pub struct BiasResidualLayerNorm<'a> {
    pub kernels: &'a Kernels,
    pub eps: f32,
}

impl candle_core::CustomOp3 for BiasResidualLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "bias_residual_layer_norm"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        r: &CudaStorage,
        rl: &Layout,
        p: &CudaStorage,
        pl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let shape = xl.shape().clone();
        let d = shape.dims().last().copied().unwrap_or(1);
        let n = shape.elem_count();
        if rl.shape() != xl.shape() || pl.shape().elem_count() != 3 * d {
            bail!(
                "bias_residual_layer_norm: shapes {:?} {:?} {:?}",
                xl.shape(),
                rl.shape(),
                pl.shape()
            );
        }
        let func = self.kernels.func(&dev, "bias_residual_ln", x.dtype())?;
        let block = block_for_width(d);
        let cfg = LaunchConfig {
            grid_dim: ((n / d) as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: ((d + 32) * 4) as u32,
        };
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let rv = view(r.as_cuda_slice::<T>()?, rl, "residual")?;
            let pv = view(p.as_cuda_slice::<T>()?, pl, "params")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(n)? };
            let (d_arg, eps) = (d as i32, self.eps);
            let mut b = func.builder();
            b.arg(&xv).arg(&rv).arg(&pv).arg(&out).arg(&d_arg).arg(&eps);
            // SAFETY: argument list matches the kernel signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
        })
    }
}

/// `LayerNorm(word[ids] + position)`; `table = [positions (P, d); gamma; beta]` `(P + 2, d)`.
pub struct EmbedLayerNorm<'a> {
    pub kernels: &'a Kernels,
    pub eps: f32,
    /// Tokens per row (positions cycle `past..past + t`).
    pub t: usize,
    pub past: usize,
    pub max_positions: usize,
}

impl candle_core::CustomOp3 for EmbedLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "embed_layer_norm"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }
    fn cuda_fwd(
        &self,
        ids: &CudaStorage,
        il: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        table: &CudaStorage,
        tl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = w.device().clone();
        let d = wl.shape().dims().last().copied().unwrap_or(1);
        let rows = il.shape().elem_count();
        let p = self.max_positions;
        if tl.shape().elem_count() != (p + 2) * d || self.past + self.t > p || self.t == 0 {
            bail!(
                "embed_layer_norm: bad table {:?} for {p} positions",
                tl.shape()
            );
        }
        let func = self.kernels.func(&dev, "embed_ln", w.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (block_for_width(d), 1, 1),
            shared_mem_bytes: ((d + 32) * 4) as u32,
        };
        with_dtype!(w.dtype(), T, {
            let idv = view(ids.as_cuda_slice::<u32>()?, il, "ids")?;
            let wv = view(w.as_cuda_slice::<T>()?, wl, "word embeddings")?;
            let tv = view(table.as_cuda_slice::<T>()?, tl, "position table")?;
            let params = tv.slice(p * d..(p + 2) * d);
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(rows * d)? };
            let (d_arg, t_arg, past_arg, eps) =
                (d as i32, self.t as i32, self.past as i32, self.eps);
            let mut b = func.builder();
            b.arg(&idv)
                .arg(&wv)
                .arg(&tv)
                .arg(&params)
                .arg(&out)
                .arg(&d_arg)
                .arg(&t_arg)
                .arg(&past_arg)
                .arg(&eps);
            // SAFETY: argument list matches the kernel signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((rows, d)),
            ))
        })
    }
}

/// `gelu_erf(x + bias)` (`to_f32 = false`) or `x + bias` as f32 (`to_f32 = true`).
pub struct BiasEpilogue<'a> {
    pub kernels: &'a Kernels,
    pub to_f32: bool,
}

impl candle_core::CustomOp2 for BiasEpilogue<'_> {
    fn name(&self) -> &'static str {
        "bias_epilogue"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let shape = xl.shape().clone();
        let d = shape.dims().last().copied().unwrap_or(1);
        let n = shape.elem_count();
        if bl.shape().elem_count() != d {
            bail!("bias_epilogue: bias {:?} for rows of {d}", bl.shape());
        }
        let base = if self.to_f32 {
            "bias_to_f32"
        } else {
            "bias_gelu"
        };
        let func = self.kernels.func(&dev, base, x.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (grid_for(n, 256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (d_arg, n_arg) = (d as i32, n as i64);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            if self.to_f32 {
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<f32>(n)? };
                let mut b = func.builder();
                b.arg(&xv).arg(&bv).arg(&out).arg(&d_arg).arg(&n_arg);
                // SAFETY: argument list matches the kernel signature.
                unsafe { b.launch(cfg) }.w()?;
                Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
            } else {
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<T>(n)? };
                let mut b = func.builder();
                b.arg(&xv).arg(&bv).arg(&out).arg(&d_arg).arg(&n_arg);
                // SAFETY: argument list matches the kernel signature.
                unsafe { b.launch(cfg) }.w()?;
                Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
            }
        })
    }
}

fn check_geometry(g: &CacheGeometry, layout: &Layout) -> Result<()> {
    let expected = [2, g.rows, g.heads, g.cap, g.head_dim];
    if layout.shape().dims() != expected {
        bail!(
            "kv cache buffer {:?}, expected {expected:?}",
            layout.shape()
        );
    }
    Ok(())
}

/// Writes a decode step's keys/values (`qkv` projection without bias + `bias`) into the cache at `pos`.
pub struct KvWrite<'a> {
    pub kernels: &'a Kernels,
    pub geometry: CacheGeometry,
    pub pos: usize,
}

impl candle_core::InplaceOpN<2> for KvWrite<'_> {
    fn name(&self) -> &'static str {
        "kv_write"
    }
    fn cuda_fwd(
        &self,
        kv: &mut CudaStorage,
        kl: &Layout,
        srcs: [(&CudaStorage, &Layout); 2],
    ) -> Result<()> {
        let [(qkv, ql), (bias, bl)] = srcs;
        let g = self.geometry;
        check_geometry(&g, kl)?;
        let dm = g.heads * g.head_dim;
        if ql.shape().elem_count() != g.rows * 3 * dm
            || bl.shape().elem_count() != 3 * dm
            || self.pos >= g.cap
        {
            bail!(
                "kv_write: qkv {:?}, bias {:?}, pos {}",
                ql.shape(),
                bl.shape(),
                self.pos
            );
        }
        let dev = qkv.device().clone();
        let func = self.kernels.func(&dev, "kv_write", qkv.dtype())?;
        let n = 2 * g.rows * dm;
        let cfg = LaunchConfig {
            grid_dim: (grid_for(n, 256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            g.rows as i32,
            g.heads as i32,
            g.cap as i32,
            g.head_dim as i32,
            self.pos as i32,
        ];
        with_dtype!(qkv.dtype(), T, {
            let Some((start, end)) = kl.contiguous_offsets() else {
                bail!("kv_write: cache must be contiguous")
            };
            let dst = kv.as_cuda_slice_mut::<T>()?;
            let mut dst = dst.slice_mut(start..end);
            let qv = view(qkv.as_cuda_slice::<T>()?, ql, "qkv")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            let mut b = func.builder();
            b.arg(&mut dst).arg(&qv).arg(&bv);
            for a in &args {
                b.arg(a);
            }
            // SAFETY: argument list matches the kernel signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok(())
        })
    }
}

/// One-token causal self-attention over the first `len` cached positions. Output `(rows, heads*dh)`.
pub struct SelfAttentionStep<'a> {
    pub kernels: &'a Kernels,
    pub geometry: CacheGeometry,
    pub len: usize,
}

impl candle_core::CustomOp3 for SelfAttentionStep<'_> {
    fn name(&self) -> &'static str {
        "self_attention_step"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }
    fn cuda_fwd(
        &self,
        qkv: &CudaStorage,
        ql: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
        kv: &CudaStorage,
        kl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.geometry;
        check_geometry(&g, kl)?;
        let dm = g.heads * g.head_dim;
        if ql.shape().elem_count() != g.rows * 3 * dm
            || bl.shape().elem_count() != 3 * dm
            || self.len > g.cap
            || self.len == 0
        {
            bail!(
                "self_attention_step: qkv {:?}, bias {:?}, len {}",
                ql.shape(),
                bl.shape(),
                self.len
            );
        }
        let smem = (g.head_dim + self.len + 32) * 4;
        if smem > MAX_SHARED_BYTES {
            bail!(
                "self_attention_step: {} positions need too much shared memory",
                self.len
            );
        }
        let dev = qkv.device().clone();
        let func = self.kernels.func(&dev, "self_attn_decode", qkv.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (g.heads as u32, g.rows as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let args = [
            g.rows as i32,
            g.heads as i32,
            g.cap as i32,
            g.head_dim as i32,
            self.len as i32,
        ];
        with_dtype!(qkv.dtype(), T, {
            let qv = view(qkv.as_cuda_slice::<T>()?, ql, "qkv")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            let kvv = view(kv.as_cuda_slice::<T>()?, kl, "kv cache")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(g.rows * dm)? };
            let mut b = func.builder();
            b.arg(&qv).arg(&bv).arg(&kvv).arg(&out);
            for a in &args {
                b.arg(a);
            }
            // SAFETY: argument list matches the kernel signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((g.rows, dm)),
            ))
        })
    }
}

/// One-token cross-attention: the `group` consecutive rows of each image attend to that image's
/// keys/values `(2, images, heads, n, dh)`. Output `(images*group, heads*dh)`.
pub struct CrossAttentionStep<'a> {
    pub kernels: &'a Kernels,
    pub group: usize,
}

impl CrossAttentionStep<'_> {
    /// Whether the kernel's shared memory holds `group` queries over `n` keys.
    pub fn fits(group: usize, n: usize, head_dim: usize) -> bool {
        (group * head_dim + group * n + 32) * 4 <= MAX_SHARED_BYTES
    }
}

impl candle_core::CustomOp3 for CrossAttentionStep<'_> {
    fn name(&self) -> &'static str {
        "cross_attention_step"
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu(self.name())
    }
    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
        kv: &CudaStorage,
        kl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let [two, images, heads, n, dh] = match kl.shape().dims() {
            [a, b, c, d, e] => [*a, *b, *c, *d, *e],
            other => bail!("cross_attention_step: image kv {other:?}"),
        };
        let dm = heads * dh;
        let rows = images * self.group;
        if two != 2 || ql.shape().elem_count() != rows * dm || bl.shape().elem_count() != dm {
            bail!(
                "cross_attention_step: q {:?}, bias {:?}, kv {:?}",
                ql.shape(),
                bl.shape(),
                kl.shape()
            );
        }
        if !Self::fits(self.group, n, dh) {
            bail!(
                "cross_attention_step: {} queries over {n} keys need too much shared memory",
                self.group
            );
        }
        let dev = q.device().clone();
        let func = self.kernels.func(&dev, "cross_attn_decode", q.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, images as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: ((self.group * dh + self.group * n + 32) * 4) as u32,
        };
        let args = [
            images as i32,
            self.group as i32,
            heads as i32,
            n as i32,
            dh as i32,
        ];
        with_dtype!(q.dtype(), T, {
            let qv = view(q.as_cuda_slice::<T>()?, ql, "q")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            let kvv = view(kv.as_cuda_slice::<T>()?, kl, "image kv")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(rows * dm)? };
            let mut b = func.builder();
            b.arg(&qv).arg(&bv).arg(&kvv).arg(&out);
            for a in &args {
                b.arg(a);
            }
            // SAFETY: argument list matches the kernel signature; sizes checked above.
            unsafe { b.launch(cfg) }.w()?;
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((rows, dm)),
            ))
        })
    }
}
