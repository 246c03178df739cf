//! CUDA implementations of the fused ops: candle custom ops launching the kernels of
//! `kernels.cu`, compiled with NVRTC and loaded once per model (function handles cached, so a
//! launch costs no lookup).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

use super::table::{self, Kernel, QGEMV_FORMATS};
use super::{CacheGeometry, SplitGeometry};

const SOURCE: &str = include_str!("kernels.cu");
/// Shared memory a block may use without opting in to more.
pub const MAX_SHARED_BYTES: usize = 48 * 1024;

/// Bias epilogues: blocks over rows and over 256-column chunks.
fn epilogue_cfg(rows: usize, d: usize) -> LaunchConfig {
    // Many rows: one block per row is enough parallelism; few wide rows (logits): split columns.
    let chunks = if rows >= 1024 {
        1
    } else {
        d.div_ceil(256).clamp(1, 65_535)
    };
    LaunchConfig {
        grid_dim: (rows.clamp(1, 1 << 20) as u32, chunks as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The loaded module's functions.
#[derive(Debug)]
pub struct Kernels {
    /// [`table::typed_names`], in that order.
    typed: Vec<CudaFunction>,
    /// [`table::qgemv_names`], in that order.
    qgemv: Vec<CudaFunction>,
    beam_scores: CudaFunction,
    topk_rows: CudaFunction,
    set_column: CudaFunction,
    argmax_rows: CudaFunction,
}

impl Kernels {
    /// Compiles the kernels with NVRTC and loads them into `dev`'s context.
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        let ptx = candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE).map_err(|e| {
            candle_core::Error::Msg(format!(
                "compiling vlmrun's fused CUDA kernels with NVRTC: {e}"
            ))
        })?;
        let module = dev.cuda_stream().context().load_module(ptx).w()?;
        let load = |names: Vec<String>| -> Result<Vec<CudaFunction>> {
            names
                .iter()
                .map(|name| module.load_function(name).w())
                .collect()
        };
        let [beam_scores, topk_rows, set_column, argmax_rows] =
            table::SEARCH.map(|name| module.load_function(name).w());
        Ok(Self {
            typed: load(table::typed_names())?,
            qgemv: load(table::qgemv_names())?,
            beam_scores: beam_scores?,
            topk_rows: topk_rows?,
            set_column: set_column?,
            argmax_rows: argmax_rows?,
        })
    }

    fn get(&self, kernel: Kernel, dtype: DType) -> Result<&CudaFunction> {
        let Some(i) = table::typed_index(kernel, dtype) else {
            bail!("fused kernels support f32/f16/bf16, got {dtype:?}")
        };
        match self.typed.get(i) {
            Some(f) => Ok(f),
            None => bail!("fused kernel {kernel:?} not loaded"),
        }
    }

    fn get_qgemv(&self, format: GgmlDType, f32_out: bool, dtype: DType) -> Result<&CudaFunction> {
        let Some(i) = table::qgemv_index(format, f32_out, dtype) else {
            bail!("no quantized GEMV kernel for {format:?} weights and {dtype:?} activations")
        };
        match self.qgemv.get(i) {
            Some(func) => Ok(func),
            None => bail!("quantized GEMV kernel for {format:?} not loaded"),
        }
    }
}

/// The contiguous part of `slice` that `layout` covers.
fn view<'a, T>(slice: &'a CudaSlice<T>, layout: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("fused kernel: {what} must be contiguous"),
    }
}

/// Row-wise kernels: one block (grid-stride) per row, 256 threads over the columns.
fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
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

/// Launches `func` with `cfg`; `$args` are pushed in order.
macro_rules! launch {
    ($dev:expr, $func:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let stream = $dev.cuda_stream();
        let mut builder = stream.launch_builder($func);
        $( builder.arg($arg); )+
        // SAFETY: the argument lists match the kernel signatures in kernels.cu and every
        // caller checks the buffer sizes the kernel indexes.
        unsafe { builder.launch($cfg) }.w()?;
    }};
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

fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1)
}

/// `LayerNorm(x + bias + residual)` with `params = [bias; gamma; beta]` `(3, d)`; with
/// `two_outputs` the result is `(2, ..)`: the sum, then its LayerNorm.
pub struct BiasResidualLayerNorm<'a> {
    pub kernels: &'a Kernels,
    pub eps: f32,
    pub two_outputs: bool,
}

impl candle_core::CustomOp3 for BiasResidualLayerNorm<'_> {
    cuda_op_shell!(CustomOp3, "bias_residual_layer_norm");
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
        let d = last_dim(xl);
        let n = xl.shape().elem_count();
        if rl.shape() != xl.shape() || pl.shape().elem_count() != 3 * d {
            bail!(
                "bias_residual_layer_norm: shapes {:?} {:?} {:?}",
                xl.shape(),
                rl.shape(),
                pl.shape()
            );
        }
        let rows = n / d;
        let (d_arg, rows_arg, eps) = (d as i32, rows as i64, self.eps);
        let out_len = if self.two_outputs { 2 * n } else { n };
        let mut out_dims = if self.two_outputs { vec![2] } else { vec![] };
        out_dims.extend_from_slice(xl.shape().dims());
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let rv = view(r.as_cuda_slice::<T>()?, rl, "residual")?;
            let pv = view(p.as_cuda_slice::<T>()?, pl, "params")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(out_len)? };
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (block_for_width(d), 1, 1),
                shared_mem_bytes: ((d + 32) * 4) as u32,
            };
            if self.two_outputs {
                let func = self.kernels.get(Kernel::BiasResidualLn2, x.dtype())?;
                launch!(dev, func, cfg, &xv, &rv, &pv, &out, &rows_arg, &d_arg, &eps);
            } else {
                let func = self.kernels.get(Kernel::BiasResidualLn, x.dtype())?;
                launch!(dev, func, cfg, &xv, &rv, &pv, &out, &d_arg, &eps);
            }
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from(out_dims),
            ))
        })
    }
}

/// `LayerNorm(word[ids] + position)`; `table = [positions (P, d); gamma; beta]` `(P + 2, d)`.
pub struct EmbedLayerNorm<'a> {
    pub kernels: &'a Kernels,
    pub eps: f32,
    /// Tokens per row (positions run `past..past + t` in every row).
    pub t: usize,
    pub past: usize,
    pub max_positions: usize,
}

impl candle_core::CustomOp3 for EmbedLayerNorm<'_> {
    cuda_op_shell!(CustomOp3, "embed_layer_norm");
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
        let d = last_dim(wl);
        let rows = il.shape().elem_count();
        let p = self.max_positions;
        if tl.shape().elem_count() != (p + 2) * d || self.past + self.t > p || self.t == 0 {
            bail!(
                "embed_layer_norm: table {:?} for {p} positions, positions {}..{}",
                tl.shape(),
                self.past,
                self.past + self.t
            );
        }
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (block_for_width(d), 1, 1),
            shared_mem_bytes: ((d + 32) * 4) as u32,
        };
        let func = self.kernels.get(Kernel::EmbedLn, w.dtype())?;
        let (d_arg, t_arg, past_arg, eps) = (d as i32, self.t as i32, self.past as i32, self.eps);
        with_dtype!(w.dtype(), T, {
            let idv = view(ids.as_cuda_slice::<u32>()?, il, "ids")?;
            let wv = view(w.as_cuda_slice::<T>()?, wl, "word embeddings")?;
            let tv = view(table.as_cuda_slice::<T>()?, tl, "position table")?;
            let params = tv.slice(p * d..(p + 2) * d);
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(rows * d)? };
            launch!(dev, func, cfg, &idv, &wv, &tv, &params, &out, &d_arg, &t_arg, &past_arg, &eps);
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
    cuda_op_shell!(CustomOp2, "bias_epilogue");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let d = last_dim(xl);
        let n = xl.shape().elem_count();
        if bl.shape().elem_count() != d {
            bail!("bias_epilogue: bias {:?} for rows of {d}", bl.shape());
        }
        let kernel = if self.to_f32 {
            Kernel::BiasToF32
        } else {
            Kernel::BiasGelu
        };
        let func = self.kernels.get(kernel, x.dtype())?;
        let rows = n / d.max(1);
        let (d_arg, rows_arg) = (d as i32, rows as i64);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            if self.to_f32 {
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<f32>(n)? };
                launch!(
                    dev,
                    func,
                    epilogue_cfg(rows, d),
                    &xv,
                    &bv,
                    &out,
                    &d_arg,
                    &rows_arg
                );
                Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
            } else {
                // SAFETY: every element is written by the kernel.
                let out = unsafe { dev.alloc::<T>(n)? };
                launch!(
                    dev,
                    func,
                    epilogue_cfg(rows, d),
                    &xv,
                    &bv,
                    &out,
                    &d_arg,
                    &rows_arg
                );
                Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
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

/// One-token causal self-attention: writes this step's keys/values (from `qkv` + bias) into the
/// cache at position `len - 1`, then attends over the first `len` positions. Output
/// `(rows, heads*dh)`.
pub struct SelfAttentionStep<'a> {
    pub kernels: &'a Kernels,
    pub geometry: CacheGeometry,
    pub len: usize,
}

impl SelfAttentionStep<'_> {
    /// Whether the kernel's shared memory holds `len` positions.
    pub fn fits(len: usize, head_dim: usize) -> bool {
        (head_dim + len + 32) * 4 <= MAX_SHARED_BYTES
    }
}

impl candle_core::CustomOp3 for SelfAttentionStep<'_> {
    cuda_op_shell!(CustomOp3, "self_attention_step");
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
        if !Self::fits(self.len, g.head_dim) {
            bail!(
                "self_attention_step: {} positions need too much shared memory",
                self.len
            );
        }
        let dev = qkv.device().clone();
        let func = self.kernels.get(Kernel::SelfAttnDecode, qkv.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (g.heads as u32, g.rows as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: ((g.head_dim + self.len + 32) * 4) as u32,
        };
        let (rows, heads, cap, dh, len) = (
            g.rows as i32,
            g.heads as i32,
            g.cap as i32,
            g.head_dim as i32,
            self.len as i32,
        );
        with_dtype!(qkv.dtype(), T, {
            let qv = view(qkv.as_cuda_slice::<T>()?, ql, "qkv")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            // The kernel writes this step's keys/values into the cache buffer through this view
            // (the cache is owned by the generation loop, read by no other tensor, and every
            // kernel runs in order on the device's single stream).
            let kvv = view(kv.as_cuda_slice::<T>()?, kl, "kv cache")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(g.rows * dm)? };
            launch!(dev, func, cfg, &qv, &bv, &kvv, &out, &rows, &heads, &cap, &dh, &len);
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
    /// Real image tokens (the rest of the token axis is zero padding).
    pub valid: usize,
}

/// Threads of a cross-attention block (8 warps).
const CROSS_BLOCK: usize = 256;

/// Keys of one cross-attention block at most (its scores live in shared memory).
const CROSS_MAX_CHUNK: usize = 1024;

/// Blocks a cross-attention step aims for: two per SM of an H100/H200 (132 SMs), so that the
/// image keys/values stream at the memory bandwidth even for one image.
const CROSS_TARGET_BLOCKS: usize = 264;

/// Keys per split of one block, at least this many (fewer leave the 256 threads idle).
const CROSS_MIN_CHUNK: usize = 32;

impl CrossAttentionStep<'_> {
    fn shared_bytes(group: usize, chunk: usize, head_dim: usize) -> usize {
        (group * head_dim + group * chunk + (CROSS_BLOCK / 32) * group * head_dim + 2 * group + 32)
            * 4
    }

    /// Whether the kernel handles `group` (<= 8) queries over `n` keys of width `head_dim` (<= 128).
    pub fn fits(group: usize, n: usize, head_dim: usize) -> bool {
        (1..=8).contains(&group)
            && head_dim <= 128
            && Self::shared_bytes(group, n.min(CROSS_MAX_CHUNK), head_dim) <= MAX_SHARED_BYTES
    }

    /// `(splits, chunk)`: the `valid` keys cut into `splits` runs of `chunk` (the last shorter,
    /// none empty) so that `heads * images * splits` blocks fill the GPU.
    pub fn split(valid: usize, heads: usize, images: usize) -> (usize, usize) {
        let blocks = (heads * images).max(1);
        let wanted = CROSS_TARGET_BLOCKS.div_ceil(blocks);
        let most = valid.div_ceil(CROSS_MIN_CHUNK).max(1);
        let least = valid.div_ceil(CROSS_MAX_CHUNK).max(1);
        let splits = wanted.min(most).max(least);
        let chunk = valid.div_ceil(splits);
        (valid.div_ceil(chunk), chunk)
    }
}

impl candle_core::CustomOp3 for CrossAttentionStep<'_> {
    cuda_op_shell!(CustomOp3, "cross_attention_step");
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
        if self.valid == 0 || self.valid > n || !Self::fits(self.group, n, dh) {
            bail!(
                "cross_attention_step: {} queries over {n} keys need too much shared memory",
                self.group
            );
        }
        let dev = q.device().clone();
        let func = self.kernels.get(Kernel::CrossAttnDecode, q.dtype())?;
        let (splits, chunk) = Self::split(self.valid, heads, images);
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, images as u32, splits as u32),
            block_dim: (CROSS_BLOCK as u32, 1, 1),
            shared_mem_bytes: Self::shared_bytes(self.group, chunk, dh) as u32,
        };
        let elem = q.dtype().size_in_bytes();
        let vec_ok = dh % (16 / elem) == 0 && (kl.start_offset() * elem) % 16 == 0;
        let a = [
            images,
            self.group,
            heads,
            self.valid,
            n,
            dh,
            vec_ok as usize,
            chunk,
        ]
        .map(|v| v as i32);
        with_dtype!(q.dtype(), T, {
            let qv = view(q.as_cuda_slice::<T>()?, ql, "q")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            let kvv = view(kv.as_cuda_slice::<T>()?, kl, "image kv")?;
            // SAFETY: every element is written by the kernel (with one split) or by the combine.
            let out = unsafe { dev.alloc::<T>(rows * dm)? };
            // With one split the kernel writes `out` and never reads this.
            let partial_len = if splits > 1 {
                rows * heads * splits * (dh + 2)
            } else {
                1
            };
            // SAFETY: every element the combine reads is written by the split kernel.
            let partial = unsafe { dev.alloc::<f32>(partial_len)? };
            launch!(
                dev, func, cfg, &qv, &bv, &kvv, &out, &partial, &a[0], &a[1], &a[2], &a[3], &a[4],
                &a[5], &a[6], &a[7]
            );
            if splits > 1 {
                let combine = self.kernels.get(Kernel::CrossAttnCombine, q.dtype())?;
                let cfg = LaunchConfig {
                    grid_dim: ((rows * heads) as u32, 1, 1),
                    block_dim: (dh.next_multiple_of(32) as u32, 1, 1),
                    shared_mem_bytes: 0,
                };
                let b = [images, self.group, heads, dh, splits].map(|v| v as i32);
                launch!(dev, combine, cfg, &partial, &out, &b[0], &b[1], &b[2], &b[3], &b[4]);
            }
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((rows, dm)),
            ))
        })
    }
}

impl SplitGeometry {
    fn check(&self, xl: &Layout, bl: &Layout) -> Result<()> {
        let dm = self.nproj * self.heads * self.head_dim;
        if xl.shape().elem_count() != self.batch * self.tokens * dm
            || bl.shape().elem_count() != dm
            || self.padded < self.tokens
        {
            bail!(
                "split_heads: x {:?}, bias {:?} for {self:?}",
                xl.shape(),
                bl.shape()
            );
        }
        Ok(())
    }

    fn out_dims(&self) -> [usize; 5] {
        [
            self.nproj,
            self.batch,
            self.heads,
            self.padded,
            self.head_dim,
        ]
    }

    fn args(&self) -> [i32; 6] {
        [
            self.batch,
            self.tokens,
            self.padded,
            self.heads,
            self.head_dim,
            self.nproj,
        ]
        .map(|v| v as i32)
    }
}

/// Head split into a new tensor.
pub struct SplitHeads<'a> {
    pub kernels: &'a Kernels,
    pub geometry: SplitGeometry,
}

impl candle_core::CustomOp2 for SplitHeads<'_> {
    cuda_op_shell!(CustomOp2, "split_heads");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let g = self.geometry;
        g.check(xl, bl)?;
        let total: usize = g.out_dims().iter().product();
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::SplitHeads, x.dtype())?;
        let a = g.args();
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(total)? };
            launch!(
                dev,
                func,
                rows_cfg(g.batch * g.padded),
                &xv,
                &bv,
                &out,
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5]
            );
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from(g.out_dims().to_vec()),
            ))
        })
    }
}

/// Head split written into an existing `(nproj, batch, heads, padded, head_dim)` tensor (view).
pub struct SplitHeadsInto<'a> {
    pub kernels: &'a Kernels,
    pub geometry: SplitGeometry,
}

impl candle_core::InplaceOp3 for SplitHeadsInto<'_> {
    cuda_op_shell!(InplaceOp3, "split_heads_into");
    fn cuda_fwd(
        &self,
        dst: &mut CudaStorage,
        dl: &Layout,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<()> {
        let g = self.geometry;
        g.check(xl, bl)?;
        if dl.shape().dims() != g.out_dims() {
            bail!(
                "split_heads_into: destination {:?}, expected {:?}",
                dl.shape(),
                g.out_dims()
            );
        }
        let Some((start, end)) = dl.contiguous_offsets() else {
            bail!("split_heads_into: destination must be contiguous")
        };
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::SplitHeads, x.dtype())?;
        let a = g.args();
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
            let out = dst.as_cuda_slice_mut::<T>()?;
            let mut out = out.slice_mut(start..end);
            launch!(
                dev,
                func,
                rows_cfg(g.batch * g.padded),
                &xv,
                &bv,
                &mut out,
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5]
            );
            Ok(())
        })
    }
}

/// `(b, heads, n, dh)` -> `(b, n, heads*dh)`.
pub struct MergeHeads<'a> {
    pub kernels: &'a Kernels,
}

impl candle_core::CustomOp1 for MergeHeads<'_> {
    cuda_op_shell!(CustomOp1, "merge_heads");
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let [b, h, n, dh] = match xl.shape().dims() {
            [a, b, c, d] => [*a, *b, *c, *d],
            other => bail!("merge_heads: expected (b, heads, n, dh), got {other:?}"),
        };
        let total = b * h * n * dh;
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::MergeHeads, x.dtype())?;
        let (b_arg, h_arg, n_arg, dh_arg) = (b as i32, h as i32, n as i32, dh as i32);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(total)? };
            launch!(
                dev,
                func,
                rows_cfg(b * n),
                &xv,
                &out,
                &b_arg,
                &h_arg,
                &n_arg,
                &dh_arg
            );
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((b, n, h * dh)),
            ))
        })
    }
}

/// Softmax over the first `valid` columns of the last dimension (at most 1024), one warp per
/// row; the remaining columns are written as 0.
pub struct SoftmaxRows<'a> {
    pub kernels: &'a Kernels,
    pub valid: usize,
}

impl candle_core::CustomOp1 for SoftmaxRows<'_> {
    cuda_op_shell!(CustomOp1, "softmax_rows");
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let stride = last_dim(xl);
        let n = self.valid;
        if n > 1024 || n == 0 || n > stride || stride > 1024 {
            bail!("softmax_rows: {n} of {stride} columns (at most 1024)");
        }
        let total = xl.shape().elem_count();
        let rows = total / stride;
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::SoftmaxRows, x.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows_arg, n_arg, stride_arg) = (rows as i64, n as i32, stride as i32);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(total)? };
            launch!(dev, func, cfg, &xv, &out, &rows_arg, &n_arg, &stride_arg);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}

/// Rows a [`Gemv`] handles in one launch.
pub const GEMV_MAX_ROWS: usize = 8;

/// `x (rows, in) . w (out, in)^T (+ bias) (GELU)`, f32 output optional; for `rows <= 8`.
pub struct Gemv<'a> {
    pub kernels: &'a Kernels,
    pub has_bias: bool,
    pub gelu: bool,
    pub f32_out: bool,
}

impl Gemv<'_> {
    /// Whether `x` `(rows, in)` and `w` `(out, in)` suit the kernel: few rows, 16-byte aligned rows.
    pub fn applies(x: &Layout, w: &Layout, elem_size: usize) -> bool {
        let in_features = last_dim(x);
        let rows = x.shape().elem_count() / in_features.max(1);
        let per16 = 16 / elem_size;
        let aligned = |l: &Layout| l.is_contiguous() && (l.start_offset() * elem_size) % 16 == 0;
        rows >= 1 && rows <= GEMV_MAX_ROWS && in_features % per16 == 0 && aligned(x) && aligned(w)
    }
}

impl candle_core::CustomOp3 for Gemv<'_> {
    cuda_op_shell!(CustomOp3, "gemv");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let in_features = last_dim(xl);
        let [out_features, w_in] = match wl.shape().dims() {
            [a, b] => [*a, *b],
            other => bail!("gemv: weight {other:?}"),
        };
        if w_in != in_features || !Self::applies(xl, wl, x.dtype().size_in_bytes()) {
            bail!("gemv: x {:?} against weight {:?}", xl.shape(), wl.shape());
        }
        let kernel = if self.f32_out {
            Kernel::GemvF32Out
        } else {
            Kernel::Gemv
        };
        let launch = GemvLaunch {
            func: self.kernels.get(kernel, x.dtype())?,
            out_features,
            has_bias: self.has_bias,
            gelu: self.gelu,
            f32_out: self.f32_out,
        };
        let stream = x.device().cuda_stream();
        with_dtype!(x.dtype(), T, {
            let wv = view(w.as_cuda_slice::<T>()?, wl, "weight")?;
            let (weight_ptr, _guard) = wv.device_ptr(&stream);
            launch.run::<T>(x, xl, weight_ptr, bias, bl)
        })
    }
}

/// One launch of a GEMV kernel (`gemv_*` or `qgemv_*`, which share their signature: x, weight
/// pointer, bias, out, rows, in, out, has_bias, gelu): checks the bias, allocates the
/// `(..., out_features)` output in the activation dtype or f32, launches one warp per output.
struct GemvLaunch<'a> {
    func: &'a CudaFunction,
    out_features: usize,
    has_bias: bool,
    gelu: bool,
    f32_out: bool,
}

impl GemvLaunch<'_> {
    fn run<T>(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        weight_ptr: u64,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)>
    where
        T: candle_core::cuda_backend::CudaDType
            + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
    {
        let out_features = self.out_features;
        if self.has_bias && bl.shape().elem_count() != out_features {
            bail!("gemv: bias {:?} for {out_features} outputs", bl.shape());
        }
        let in_features = last_dim(xl);
        let rows = xl.shape().elem_count() / in_features.max(1);
        let dev = x.device().clone();
        let cfg = LaunchConfig {
            grid_dim: (out_features.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            rows as i32,
            in_features as i32,
            out_features as i32,
            self.has_bias as i32,
            self.gelu as i32,
        ];
        let mut out_dims = xl.shape().dims().to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = out_features;
        }
        let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
        let bv = view(bias.as_cuda_slice::<T>()?, bl, "bias")?;
        let n = rows * out_features;
        let storage = if self.f32_out {
            self.launch_into::<T, f32>(&dev, cfg, &xv, weight_ptr, &bv, n, &args)?
        } else {
            self.launch_into::<T, T>(&dev, cfg, &xv, weight_ptr, &bv, n, &args)?
        };
        Ok((storage, Shape::from(out_dims)))
    }

    /// Allocates the `n` outputs of element type `O` and launches the kernel into them.
    #[allow(clippy::too_many_arguments)]
    fn launch_into<T, O>(
        &self,
        dev: &CudaDevice,
        cfg: LaunchConfig,
        xv: &CudaView<'_, T>,
        weight_ptr: u64,
        bv: &CudaView<'_, T>,
        n: usize,
        args: &[i32; 5],
    ) -> Result<CudaStorage>
    where
        O: candle_core::cuda_backend::CudaDType
            + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
    {
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<O>(n)? };
        launch!(
            dev,
            self.func,
            cfg,
            xv,
            &weight_ptr,
            bv,
            &out,
            &args[0],
            &args[1],
            &args[2],
            &args[3],
            &args[4]
        );
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

/// `x (rows, in) . dq(w) (out, in)^T (+ bias) (GELU)`, f32 output optional, with `w` a
/// GGML-quantized weight (q8_0, q4_0, q4k, q6k) decoded in registers: weight-only quantization that
/// reads the quantized bytes instead of a dequantized copy; for `rows <= 8`.
pub struct QuantizedGemv<'a> {
    pub kernels: &'a Kernels,
    pub weight: &'a QTensor,
    pub has_bias: bool,
    pub gelu: bool,
    pub f32_out: bool,
}

impl QuantizedGemv<'_> {
    /// Whether `x` `(rows, in)` and the quantized `weight` `(out, in)` suit the kernel: a format
    /// it decodes, on CUDA, few rows, `in` a multiple of the block size and 16-byte aligned rows.
    pub fn applies(x: &Layout, weight: &QTensor, elem_size: usize) -> bool {
        let in_features = last_dim(x);
        let rows = x.shape().elem_count() / in_features.max(1);
        let format = weight.dtype();
        let known = QGEMV_FORMATS.iter().any(|(q, _)| *q == format);
        let shape_ok = matches!(weight.shape().dims(), [_, w_in] if *w_in == in_features);
        let x_aligned = x.is_contiguous() && (x.start_offset() * elem_size) % 16 == 0;
        known
            && weight.device().is_cuda()
            && shape_ok
            && rows >= 1
            && rows <= GEMV_MAX_ROWS
            && in_features % format.block_size() == 0
            && in_features % 8 == 0
            && x_aligned
    }
}

impl candle_core::CustomOp2 for QuantizedGemv<'_> {
    cuda_op_shell!(CustomOp2, "quantized_gemv");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        bias: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        if !Self::applies(xl, self.weight, x.dtype().size_in_bytes()) {
            bail!(
                "quantized_gemv: x {:?} against {:?} weight {:?}",
                xl.shape(),
                self.weight.dtype(),
                self.weight.shape()
            );
        }
        let launch = GemvLaunch {
            func: self
                .kernels
                .get_qgemv(self.weight.dtype(), self.f32_out, x.dtype())?,
            out_features: self.weight.shape().dims()[0],
            has_bias: self.has_bias,
            gelu: self.gelu,
            f32_out: self.f32_out,
        };
        let stream = x.device().cuda_stream();
        // The guard keeps the weight's buffer ordered with this stream until the launch is queued.
        let (weight_ptr, _guard) = self.weight.device_ptr_with_guard(&stream)?;
        with_dtype!(x.dtype(), T, {
            launch.run::<T>(x, xl, weight_ptr as u64, bias, bl)
        })
    }
}

/// Beam step scores: `log_softmax(logits) (+ -inf at eos) + running[row]`, f32.
pub struct BeamScores<'a> {
    pub kernels: &'a Kernels,
    /// Column set to -inf (the min-length rule), if any.
    pub blocked: Option<u32>,
}

impl candle_core::CustomOp2 for BeamScores<'_> {
    cuda_op_shell!(CustomOp2, "beam_scores");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        running: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = last_dim(xl);
        let total = xl.shape().elem_count();
        let rows = total / n;
        if rl.shape().elem_count() != rows {
            bail!(
                "beam_scores: {} running scores for {rows} rows",
                rl.shape().elem_count()
            );
        }
        let dev = x.device().clone();
        let xv = view(x.as_cuda_slice::<f32>()?, xl, "logits")?;
        let rv = view(running.as_cuda_slice::<f32>()?, rl, "running scores")?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<f32>(total)? };
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n_arg, eos) = (n as i32, self.blocked.map_or(-1, |e| e as i32));
        launch!(
            dev,
            &self.kernels.beam_scores,
            cfg,
            &xv,
            &rv,
            &out,
            &n_arg,
            &eos
        );
        Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
    }
}

/// Per row, the `k` (<= 16) largest entries: `(rows, 2, k)` f32, values then indices.
pub struct TopKRows<'a> {
    pub kernels: &'a Kernels,
    pub k: usize,
}

/// Largest `k` a [`TopKRows`] supports.
pub const TOPK_MAX: usize = 16;

impl candle_core::CustomOp1 for TopKRows<'_> {
    cuda_op_shell!(CustomOp1, "topk_rows");
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = last_dim(xl);
        let rows = xl.shape().elem_count() / n.max(1);
        if self.k == 0 || self.k > TOPK_MAX || self.k > n || n >= (1 << 24) {
            bail!("topk_rows: k {} over rows of {n}", self.k);
        }
        let dev = x.device().clone();
        let xv = view(x.as_cuda_slice::<f32>()?, xl, "scores")?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<f32>(rows * 2 * self.k)? };
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n_arg, k_arg) = (n as i32, self.k as i32);
        launch!(dev, &self.kernels.topk_rows, cfg, &xv, &out, &n_arg, &k_arg);
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, 2, self.k)),
        ))
    }
}

/// f32 pixels `(b, 3, g*p, g*p)` -> patch rows `(b, g*g, 3*p*p)` in `dtype`.
pub struct Patchify<'a> {
    pub kernels: &'a Kernels,
    pub patch: usize,
    pub dtype: DType,
}

impl candle_core::CustomOp1 for Patchify<'_> {
    cuda_op_shell!(CustomOp1, "patchify");
    fn cuda_fwd(&self, px: &CudaStorage, pl: &Layout) -> Result<(CudaStorage, Shape)> {
        let p = self.patch;
        let [b, c, h, w] = match pl.shape().dims() {
            [a, b, c, d] => [*a, *b, *c, *d],
            other => bail!("patchify: pixels {other:?}"),
        };
        if c != 3 || p == 0 || h != w || h % p != 0 {
            bail!("patchify: pixels {:?} with patch {p}", pl.shape());
        }
        let g = h / p;
        let total = b * 3 * h * w;
        let dev = px.device().clone();
        let func = self.kernels.get(Kernel::Patchify, self.dtype)?;
        let pv = view(px.as_cuda_slice::<f32>()?, pl, "pixels")?;
        let (b_arg, g_arg, p_arg) = (b as i32, g as i32, p as i32);
        with_dtype!(self.dtype, T, {
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(total)? };
            launch!(
                dev,
                func,
                rows_cfg(b * g * g),
                &pv,
                &out,
                &b_arg,
                &g_arg,
                &p_arg
            );
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((b, g * g, 3 * p * p)),
            ))
        })
    }
}

/// Patch projections `(b, np, d)` (without bias) -> embeddings `(b, 1 + np, d)`;
/// `table = [bias; class; positions]` `(3 + np, d)`.
pub struct VisionEmbed<'a> {
    pub kernels: &'a Kernels,
}

impl candle_core::CustomOp2 for VisionEmbed<'_> {
    cuda_op_shell!(CustomOp2, "vision_embed");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        table: &CudaStorage,
        tl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let [b, np, d] = match xl.shape().dims() {
            [a, b, c] => [*a, *b, *c],
            other => bail!("vision_embed: patches {other:?}"),
        };
        if tl.shape().dims() != [np + 3, d] {
            bail!(
                "vision_embed: table {:?} for {np} patches of width {d}",
                tl.shape()
            );
        }
        let total = b * (np + 1) * d;
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::VisionEmbed, x.dtype())?;
        let (b_arg, np_arg, d_arg) = (b as i32, np as i32, d as i32);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "patches")?;
            let tv = view(table.as_cuda_slice::<T>()?, tl, "table")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(total)? };
            launch!(
                dev,
                func,
                rows_cfg(b * (np + 1)),
                &xv,
                &tv,
                &out,
                &b_arg,
                &np_arg,
                &d_arg
            );
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((b, np + 1, d)),
            ))
        })
    }
}

/// Sets column `col` of f32 `(rows, n)` to `value`, in place.
pub struct SetColumn<'a> {
    pub kernels: &'a Kernels,
    pub col: usize,
    pub value: f32,
}

impl candle_core::InplaceOp1 for SetColumn<'_> {
    cuda_op_shell!(InplaceOp1, "set_column");
    fn cuda_fwd(&self, x: &mut CudaStorage, xl: &Layout) -> Result<()> {
        let n = last_dim(xl);
        let rows = xl.shape().elem_count() / n.max(1);
        if self.col >= n {
            bail!("set_column: column {} of {n}", self.col);
        }
        let Some((start, end)) = xl.contiguous_offsets() else {
            bail!("set_column: tensor must be contiguous")
        };
        let dev = x.device().clone();
        let slice = x.as_cuda_slice_mut::<f32>()?;
        let mut slice = slice.slice_mut(start..end);
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(256).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows_arg, n_arg, col_arg, value) =
            (rows as i32, n as i32, self.col as i32, self.value);
        launch!(
            dev,
            &self.kernels.set_column,
            cfg,
            &mut slice,
            &rows_arg,
            &n_arg,
            &col_arg,
            &value
        );
        Ok(())
    }
}

/// First index of each row's maximum (f32 `(rows, n)` -> u32 `(rows,)`), like `torch.argmax`.
pub struct ArgmaxRows<'a> {
    pub kernels: &'a Kernels,
}

impl candle_core::CustomOp1 for ArgmaxRows<'_> {
    cuda_op_shell!(CustomOp1, "argmax_rows");
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = last_dim(xl);
        let rows = xl.shape().elem_count() / n.max(1);
        let dev = x.device().clone();
        let xv = view(x.as_cuda_slice::<f32>()?, xl, "x")?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<u32>(rows)? };
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let n_arg = n as i32;
        launch!(dev, &self.kernels.argmax_rows, cfg, &xv, &out, &n_arg);
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(rows)))
    }
}

/// `LayerNorm(x)` with `params = [gamma; beta]` `(2, d)`.
pub struct LayerNormRows<'a> {
    pub kernels: &'a Kernels,
    pub eps: f32,
}

impl candle_core::CustomOp2 for LayerNormRows<'_> {
    cuda_op_shell!(CustomOp2, "layer_norm_rows");
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        p: &CudaStorage,
        pl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let d = last_dim(xl);
        let n = xl.shape().elem_count();
        if pl.shape().elem_count() != 2 * d {
            bail!("layer_norm_rows: params {:?} for width {d}", pl.shape());
        }
        let dev = x.device().clone();
        let func = self.kernels.get(Kernel::LayerNormRows, x.dtype())?;
        let cfg = LaunchConfig {
            grid_dim: ((n / d.max(1)) as u32, 1, 1),
            block_dim: (block_for_width(d), 1, 1),
            shared_mem_bytes: ((d + 32) * 4) as u32,
        };
        let (d_arg, eps) = (d as i32, self.eps);
        with_dtype!(x.dtype(), T, {
            let xv = view(x.as_cuda_slice::<T>()?, xl, "x")?;
            let pv = view(p.as_cuda_slice::<T>()?, pl, "params")?;
            // SAFETY: every element is written by the kernel.
            let out = unsafe { dev.alloc::<T>(n)? };
            launch!(dev, func, cfg, &xv, &pv, &out, &d_arg, &eps);
            Ok((CudaStorage::wrap_cuda_slice(out, dev), xl.shape().clone()))
        })
    }
}
