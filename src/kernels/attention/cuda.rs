//! Launchers of `kernel.cu` and the candle custom ops around them: the forward op keeps the
//! per-row log-sum-exp for its backward, which recomputes the probabilities tile by tile.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result, Shape, Tensor};

use crate::kernels::nvrtc::{cuda_storage, load_module, tensor_from_slice, typed_view, with_half};

/// Head width the kernels are written for.
pub const HEAD_DIM: usize = 64;
/// Keys per backward block.
const TILE: usize = 64;
/// Query rows per forward block (`ATT_FWD_ROWS` of kernel.cu: 4 warps of one 16-row tile).
const FWD_ROWS: usize = 64;
/// Shared-memory row stride of the backward kernel's tiles (elements), as `ATT_LD`.
const SMEM_LD: usize = 72;
/// Dynamic shared memory of the backward kernel (`ATT_BWD_SHARED`): seven 64-row tiles of 16-bit
/// values (K, V, dS^T, two Q, two dO) and two sets of the log-sum-exp and delta of 64 rows.
const BWD_SHARED_BYTES: usize = 7 * TILE * SMEM_LD * 2 + 4 * TILE * 4;
/// The kernels copy tiles 16 bytes at a time: row strides and starts are multiples of this many
/// elements.
const ALIGN: usize = 8;

const SOURCE: &str = include_str!("kernel.cu");

/// The kernels of one element type.
#[derive(Debug)]
struct Typed {
    fwd: CudaFunction,
    delta: CudaFunction,
    bwd: CudaFunction,
    dq: CudaFunction,
}

/// Oldest compute capability the kernels run on (tensor-core bf16 `mma.sync`).
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// The GPU's compute capability.
pub fn compute_capability(dev: &CudaDevice) -> Result<(i32, i32)> {
    dev.cuda_stream().context().compute_capability().w()
}

/// The compiled module: bf16 and f16 instantiations.
#[derive(Debug)]
pub struct AttentionKernels {
    bf16: Typed,
    f16: Typed,
}

impl AttentionKernels {
    /// Compiles `kernel.cu` with NVRTC and loads it into `dev`'s context.
    pub fn load(dev: &CudaDevice) -> Result<Self> {
        // mma.sync with bf16 operands, cp.async, ldmatrix and cvt.rn.bf16x2 need sm_80 (Ampere)
        // or newer; Hopper's vector reductions (the backward's dQ) need sm_90 code.
        let arch = if compute_capability(dev)? >= (9, 0) {
            "compute_90"
        } else {
            "compute_80"
        };
        let module = load_module(dev, SOURCE, "fused attention", Some(arch))?;
        let typed = |suffix: &str| -> Result<Typed> {
            let bwd = module
                .load_function(&format!("attention_bwd_{suffix}"))
                .w()?;
            bwd.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                BWD_SHARED_BYTES as i32,
            )
            .w()?;
            Ok(Typed {
                fwd: module
                    .load_function(&format!("attention_fwd_{suffix}"))
                    .w()?,
                delta: module
                    .load_function(&format!("attention_bwd_delta_{suffix}"))
                    .w()?,
                bwd,
                dq: module
                    .load_function(&format!("attention_bwd_dq_{suffix}"))
                    .w()?,
            })
        };
        Ok(Self {
            bf16: typed("bf16")?,
            f16: typed("f16")?,
        })
    }

    fn typed(&self, dtype: DType) -> Result<&Typed> {
        match dtype {
            DType::BF16 => Ok(&self.bf16),
            DType::F16 => Ok(&self.f16),
            other => bail!("fused attention runs in bf16/f16, got {other:?}"),
        }
    }
}

/// Launches `func` with `cfg` and the arguments in order.
macro_rules! launch {
    ($dev:expr, $func:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let stream = $dev.cuda_stream();
        let mut builder = stream.launch_builder($func);
        $( builder.arg($arg); )+
        // SAFETY: the argument lists match the kernel signatures in kernel.cu, and the callers
        // check every shape the kernels index (rows, heads, head width, row strides).
        unsafe { builder.launch($cfg) }.w()?;
    }};
}

/// The part of `slice` from element `start` on.
fn from<T: DeviceRepr>(slice: &CudaSlice<T>, start: usize) -> CudaView<'_, T> {
    slice.slice(start..)
}

fn contiguous_start(layout: &Layout, what: &str) -> Result<usize> {
    match layout.contiguous_offsets() {
        Some((start, _)) if start % ALIGN == 0 => Ok(start),
        Some(_) => bail!("fused attention: {what} must start at a multiple of {ALIGN} elements"),
        None => bail!("fused attention: {what} must be contiguous"),
    }
}

/// Storage offsets the kernels can copy from 16 bytes at a time.
fn aligned(starts: &[usize], what: &str) -> Result<()> {
    if starts.iter().any(|s| s % ALIGN != 0) {
        bail!(
            "fused attention: {what} must start at a multiple of {ALIGN} elements, got {starts:?}"
        );
    }
    Ok(())
}

/// The shape of a packed `(B, N, 3 * heads * 64)` query/key/value tensor.
fn qkv_dims(layout: &Layout, heads: usize) -> Result<(usize, usize, usize)> {
    let (b, n, three_d) = layout.shape().dims3()?;
    let d = heads * HEAD_DIM;
    if three_d != 3 * d {
        bail!(
            "fused attention: qkv of shape {:?} is not (B, N, 3 * {heads} heads * {HEAD_DIM})",
            layout.shape()
        );
    }
    if n == 0 || b == 0 || b > 65_535 || heads > 65_535 {
        bail!(
            "fused attention: unsupported qkv shape {:?}",
            layout.shape()
        );
    }
    Ok((b, n, d))
}

/// `rows` (queries of a forward, keys of a backward) in blocks of `block_rows`.
fn grid(rows: usize, block_rows: usize, heads: usize, batch: usize, shared: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(block_rows) as u32, heads as u32, batch as u32),
        block_dim: (128, 1, 1),
        shared_mem_bytes: shared as u32,
    }
}

fn linear(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Multi-head self-attention over a packed qkv `(B, N, 3D)` -> context `(B, N, D)`
/// (`softmax(scale * q k^T) v` per head, heads of 64), differentiable.
pub struct SelfAttention {
    pub kernels: Arc<AttentionKernels>,
    pub heads: usize,
    pub causal: bool,
    pub scale: f32,
    /// The forward's log-sum-exp per (batch, head, row), base 2, f32: the backward reads it.
    pub lse: Mutex<Option<Arc<CudaSlice<f32>>>>,
}

impl SelfAttention {
    pub fn new(kernels: Arc<AttentionKernels>, heads: usize, causal: bool, scale: f32) -> Self {
        Self {
            kernels,
            heads,
            causal,
            scale,
            lse: Mutex::new(None),
        }
    }
}

impl candle_core::CustomOp1 for SelfAttention {
    cuda_op_shell!(CustomOp1, "fused_self_attention");
    fn cuda_fwd(&self, qkv: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = qkv.device().clone();
        let (b, n, d) = qkv_dims(layout, self.heads)?;
        let start = contiguous_start(layout, "qkv")?;
        let typed = self.kernels.typed(qkv.dtype())?;
        let (n_arg, heads_arg) = (n as i32, self.heads as i32);
        let (row3, row1) = (3 * d as i64, d as i64);
        let scale_log2 = self.scale * std::f32::consts::LOG2_E;
        let causal = self.causal as i32;
        with_half!("fused attention", qkv.dtype(), T, {
            let src = qkv.as_cuda_slice::<T>()?;
            let (q, k, v) = (
                from(src, start),
                from(src, start + d),
                from(src, start + 2 * d),
            );
            // SAFETY: the kernel writes every row < N of every head.
            let out = unsafe { dev.alloc::<T>(b * n * d)? };
            let lse = unsafe { dev.alloc::<f32>(b * self.heads * n)? };
            launch!(
                dev,
                &typed.fwd,
                grid(n, FWD_ROWS, self.heads, b, 0),
                &q,
                &k,
                &v,
                &out,
                &lse,
                &n_arg,
                &n_arg,
                &heads_arg,
                &row3,
                &row3,
                &row1,
                &scale_log2,
                &causal,
            );
            let mut slot = self.lse.lock().map_err(|_| {
                candle_core::Error::Msg("fused attention: lse lock poisoned".into())
            })?;
            *slot = Some(Arc::new(lse));
            Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                Shape::from((b, n, d)),
            ))
        })
    }

    fn bwd(&self, qkv: &Tensor, out: &Tensor, grad_out: &Tensor) -> Result<Option<Tensor>> {
        let lse = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused attention: lse lock poisoned".into()))?
            .clone();
        let Some(lse) = lse else {
            bail!("fused attention: backward before forward")
        };
        let op = SelfAttentionBackward {
            kernels: self.kernels.clone(),
            heads: self.heads,
            causal: self.causal,
            scale: self.scale,
            lse,
        };
        let grad_out = grad_out.to_dtype(out.dtype())?.contiguous()?;
        qkv.contiguous()?
            .apply_op3_no_bwd(&out.contiguous()?, &grad_out, &op)
            .map(Some)
    }
}

/// `(qkv, out, grad_out)` -> `grad_qkv` `(B, N, 3D)`.
struct SelfAttentionBackward {
    kernels: Arc<AttentionKernels>,
    heads: usize,
    causal: bool,
    scale: f32,
    lse: Arc<CudaSlice<f32>>,
}

impl candle_core::CustomOp3 for SelfAttentionBackward {
    cuda_op_shell!(CustomOp3, "fused_self_attention_backward");
    fn cuda_fwd(
        &self,
        qkv: &CudaStorage,
        qkv_l: &Layout,
        out: &CudaStorage,
        out_l: &Layout,
        grad: &CudaStorage,
        grad_l: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = qkv.device().clone();
        let (b, n, d) = qkv_dims(qkv_l, self.heads)?;
        if out_l.shape().dims() != [b, n, d] || grad_l.shape().dims() != [b, n, d] {
            bail!(
                "fused attention backward: output {:?} / gradient {:?} for qkv {:?}",
                out_l.shape(),
                grad_l.shape(),
                qkv_l.shape()
            );
        }
        if self.lse.len() != b * self.heads * n {
            bail!("fused attention backward: the saved statistics belong to another shape");
        }
        let (qs, os, gs) = (
            contiguous_start(qkv_l, "qkv")?,
            contiguous_start(out_l, "output")?,
            contiguous_start(grad_l, "output gradient")?,
        );
        let typed = self.kernels.typed(qkv.dtype())?;
        let heads = self.heads;
        let (n_arg, heads_arg) = (n as i32, heads as i32);
        let (row3, row1) = (3 * d as i64, d as i64);
        let rows_total = (b * n * heads) as i64;
        let pairs = (b * n * d / 2) as i64;
        let scale_log2 = self.scale * std::f32::consts::LOG2_E;
        let scale = self.scale;
        let causal = self.causal as i32;
        with_half!("fused attention", qkv.dtype(), T, {
            let src = qkv.as_cuda_slice::<T>()?;
            let (q, k, v) = (from(src, qs), from(src, qs + d), from(src, qs + 2 * d));
            let o = from(out.as_cuda_slice::<T>()?, os);
            let dout = from(grad.as_cuda_slice::<T>()?, gs);
            // SAFETY: delta gets every (row, head); dq/dk/dv of every row are written below.
            let delta = unsafe { dev.alloc::<f32>(b * heads * n)? };
            let dq_acc = dev.alloc_zeros::<f32>(b * n * d)?;
            let dqkv = unsafe { dev.alloc::<T>(b * n * 3 * d)? };
            launch!(
                dev,
                &typed.delta,
                linear(b * n * heads * 32),
                &o,
                &dout,
                &delta,
                &n_arg,
                &heads_arg,
                &row1,
                &rows_total,
            );
            let (dk, dv) = (from(&dqkv, d), from(&dqkv, 2 * d));
            launch!(
                dev,
                &typed.bwd,
                grid(n, TILE, heads, b, BWD_SHARED_BYTES),
                &q,
                &k,
                &v,
                &dout,
                self.lse.as_ref(),
                &delta,
                &dq_acc,
                &dk,
                &dv,
                &n_arg,
                &n_arg,
                &heads_arg,
                &row3,
                &row3,
                &row1,
                &row3,
                &scale_log2,
                &scale,
                &causal,
            );
            launch!(
                dev,
                &typed.dq,
                linear(b * n * d / 2),
                &dq_acc,
                &dqkv,
                &n_arg,
                &heads_arg,
                &row3,
                &pairs,
            );
            Ok((
                CudaStorage::wrap_cuda_slice(dqkv, dev),
                Shape::from((b, n, 3 * d)),
            ))
        })
    }
}

/// Where the queries, keys and values of one attention call sit: queries in a `(B, nq, q_row)`
/// tensor from column `q_col`, keys and values in a `(B, nk, kv_row)` tensor from columns
/// `k_col` and `v_col` (`heads * 64` columns each). Self-attention reads all three from one
/// packed `(B, N, 3D)` tensor.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub batch: usize,
    pub nq: usize,
    pub nk: usize,
    pub heads: usize,
    pub q_row: usize,
    pub q_col: usize,
    pub kv_row: usize,
    pub k_col: usize,
    pub v_col: usize,
    /// Queries, keys and values are one tensor (`q` and `kv` are the same): the backward writes
    /// one gradient tensor.
    pub packed: bool,
}

impl Placement {
    fn check(&self, q: &Tensor, kv: &Tensor) -> Result<()> {
        let d = self.heads * HEAD_DIM;
        let fits = q.dims() == [self.batch, self.nq, self.q_row]
            && kv.dims() == [self.batch, self.nk, self.kv_row]
            && self.q_col + d <= self.q_row
            && self.k_col + d <= self.kv_row
            && self.v_col + d <= self.kv_row
            && [self.q_row, self.q_col, self.kv_row, self.k_col, self.v_col]
                .iter()
                .all(|v| v % ALIGN == 0)
            && self.batch > 0
            && self.batch <= 65_535
            && self.heads > 0
            && self.heads <= 65_535
            && self.nq > 0
            && self.nk > 0;
        if !fits {
            bail!(
                "fused attention: queries {:?} / keys-values {:?} do not fit {self:?}",
                q.shape(),
                kv.shape()
            );
        }
        Ok(())
    }
}

/// `softmax(scale * q k^T) v` per head -> `(B, nq, heads * 64)` and the per-row log-sum-exp
/// (base 2) the backward needs.
pub fn forward(
    kernels: &AttentionKernels,
    dev: &CudaDevice,
    q: &Tensor,
    kv: &Tensor,
    at: Placement,
    causal: bool,
    scale: f32,
) -> Result<(Tensor, Arc<CudaSlice<f32>>)> {
    at.check(q, kv)?;
    if causal && at.nq != at.nk {
        bail!("fused attention: a causal mask needs as many queries as keys");
    }
    let d = at.heads * HEAD_DIM;
    let (qs, q0) = cuda_storage(q, "attention queries")?;
    let (ks, k0) = cuda_storage(kv, "attention keys/values")?;
    aligned(&[q0, k0], "queries / keys-values")?;
    let typed = kernels.typed(q.dtype())?;
    let (nq, nk, heads) = (at.nq as i32, at.nk as i32, at.heads as i32);
    let (q_row, kv_row, o_row) = (at.q_row as i64, at.kv_row as i64, d as i64);
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let causal = causal as i32;
    with_half!("fused attention", q.dtype(), T, {
        let qv = typed_view::<T>(&qs, q0 + at.q_col)?;
        let kvv = typed_view::<T>(&ks, k0 + at.k_col)?;
        let vv = typed_view::<T>(&ks, k0 + at.v_col)?;
        // SAFETY: the kernel writes every row < nq of every head, and every lse entry.
        let out = unsafe { dev.alloc::<T>(at.batch * at.nq * d)? };
        let lse = unsafe { dev.alloc::<f32>(at.batch * at.heads * at.nq)? };
        launch!(
            dev,
            &typed.fwd,
            grid(at.nq, FWD_ROWS, at.heads, at.batch, 0),
            &qv,
            &kvv,
            &vv,
            &out,
            &lse,
            &nq,
            &nk,
            &heads,
            &q_row,
            &kv_row,
            &o_row,
            &scale_log2,
            &causal,
        );
        Ok((
            tensor_from_slice(out, dev, (at.batch, at.nq, d)),
            Arc::new(lse),
        ))
    })
}

/// Gradients of [`forward`] for `dout` `(B, nq, D)`: `(dq, dkv)` shaped like `q` and `kv`
/// (only the placed columns are written: self-attention's packed tensor gets all of its columns;
/// with `q` and `kv` the same tensor `dq` and `dkv` are the same tensor too).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    kernels: &AttentionKernels,
    dev: &CudaDevice,
    q: &Tensor,
    kv: &Tensor,
    out: &Tensor,
    dout: &Tensor,
    lse: &CudaSlice<f32>,
    at: Placement,
    causal: bool,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    at.check(q, kv)?;
    let d = at.heads * HEAD_DIM;
    if out.dims() != [at.batch, at.nq, d] || dout.dims() != [at.batch, at.nq, d] {
        bail!(
            "fused attention backward: output {:?} / gradient {:?} for {at:?}",
            out.shape(),
            dout.shape()
        );
    }
    if lse.len() != at.batch * at.heads * at.nq {
        bail!("fused attention backward: the saved statistics belong to another shape");
    }
    let packed = at.packed;
    let (qs, q0) = cuda_storage(q, "attention queries")?;
    let (ks, k0) = cuda_storage(kv, "attention keys/values")?;
    let (os, o0) = cuda_storage(out, "attention output")?;
    let (gs, g0) = cuda_storage(dout, "attention output gradient")?;
    aligned(
        &[q0, k0, o0, g0],
        "queries / keys-values / output / output gradient",
    )?;
    let typed = kernels.typed(q.dtype())?;
    let (nq, nk, heads) = (at.nq as i32, at.nk as i32, at.heads as i32);
    let (q_row, kv_row, o_row) = (at.q_row as i64, at.kv_row as i64, d as i64);
    let rows_total = (at.batch * at.nq * at.heads) as i64;
    let pairs = (at.batch * at.nq * d / 2) as i64;
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let causal = causal as i32;
    with_half!("fused attention", q.dtype(), T, {
        let qv = typed_view::<T>(&qs, q0 + at.q_col)?;
        let kvv = typed_view::<T>(&ks, k0 + at.k_col)?;
        let vv = typed_view::<T>(&ks, k0 + at.v_col)?;
        let ov = typed_view::<T>(&os, o0)?;
        let gv = typed_view::<T>(&gs, g0)?;
        // SAFETY: delta gets every (row, head); the placed columns of every row of dq and dkv
        // are written below, and the rest is zeroed where the tensors are not fully placed.
        let delta = unsafe { dev.alloc::<f32>(at.batch * at.heads * at.nq)? };
        let dq_acc = dev.alloc_zeros::<f32>(at.batch * at.nq * d)?;
        let kv_len = at.batch * at.nk * at.kv_row;
        let dkv = if packed || at.kv_row == 2 * d {
            unsafe { dev.alloc::<T>(kv_len)? }
        } else {
            dev.alloc_zeros::<T>(kv_len)?
        };
        let dq_separate = if packed {
            None
        } else if at.q_row == d {
            Some(unsafe { dev.alloc::<T>(at.batch * at.nq * at.q_row)? })
        } else {
            Some(dev.alloc_zeros::<T>(at.batch * at.nq * at.q_row)?)
        };
        launch!(
            dev,
            &typed.delta,
            linear(at.batch * at.nq * at.heads * 32),
            &ov,
            &gv,
            &delta,
            &nq,
            &heads,
            &o_row,
            &rows_total,
        );
        let dkv_row = kv_row;
        {
            let (dk, dv) = (from(&dkv, at.k_col), from(&dkv, at.v_col));
            launch!(
                dev,
                &typed.bwd,
                grid(at.nk, TILE, at.heads, at.batch, BWD_SHARED_BYTES),
                &qv,
                &kvv,
                &vv,
                &gv,
                lse,
                &delta,
                &dq_acc,
                &dk,
                &dv,
                &nq,
                &nk,
                &heads,
                &q_row,
                &kv_row,
                &o_row,
                &dkv_row,
                &scale_log2,
                &scale,
                &causal,
            );
        }
        {
            let dq_view = match &dq_separate {
                Some(dq) => from(dq, at.q_col),
                None => from(&dkv, at.q_col),
            };
            launch!(
                dev,
                &typed.dq,
                linear(at.batch * at.nq * d / 2),
                &dq_acc,
                &dq_view,
                &nq,
                &heads,
                &q_row,
                &pairs,
            );
        }
        let dkv = tensor_from_slice(dkv, dev, (at.batch, at.nk, at.kv_row));
        let dq = match dq_separate {
            Some(dq) => tensor_from_slice(dq, dev, (at.batch, at.nq, at.q_row)),
            None => dkv.clone(),
        };
        Ok((dq, dkv))
    })
}
