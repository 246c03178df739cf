//! Launchers of `kernel.cu`: AdamW in place on a parameter and its moments (and its compute
//! copy), the global gradient norm, and multi-tensor casts.

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaStorage, DType, Layout, Result, Storage, Tensor};

use super::{AdamWItem, AdamWScalars};
use crate::kernels::nvrtc::load_module;

/// The kernels after what every kernel.cu shares (`../half.cu`).
const SOURCE: &str = concat!(include_str!("../half.cu"), include_str!("kernel.cu"));

#[derive(Debug)]
pub struct AdamWKernels {
    adamw: CudaFunction,
    adamw_multi: CudaFunction,
    sum_squares_multi: CudaFunction,
    cast_from_f32: CudaFunction,
    cast_to_f32: CudaFunction,
}

impl AdamWKernels {
    pub fn load(dev: &candle_core::CudaDevice) -> Result<Self> {
        let module = load_module(dev, SOURCE, "optimizer", None)?;
        Ok(Self {
            adamw: module.load_function("adamw_f32").w()?,
            adamw_multi: module.load_function("adamw_multi_f32").w()?,
            sum_squares_multi: module.load_function("sum_squares_multi_f32").w()?,
            cast_from_f32: module.load_function("cast_multi_from_f32").w()?,
            cast_to_f32: module.load_function("cast_multi_to_f32").w()?,
        })
    }
}

fn cfg(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 4096) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The f32 contiguous CUDA storage of `t` as (storage guard, start offset), or `None`.
fn f32_cuda(t: &Tensor) -> Option<(impl std::ops::Deref<Target = Storage> + '_, usize)> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (storage, layout): (_, &Layout) = t.storage_and_layout();
    let (start, _) = layout.contiguous_offsets()?;
    matches!(&*storage, Storage::Cuda(_)).then_some((storage, start))
}

struct AdamWOp<'a> {
    kernels: &'a AdamWKernels,
    grad: &'a CudaStorage,
    m: &'a CudaStorage,
    v: &'a CudaStorage,
    offsets: [usize; 3],
    n: usize,
    scalars: AdamWScalars,
}

impl candle_core::InplaceOp1 for AdamWOp<'_> {
    cuda_op_shell!(InplaceOp1, "fused_adamw");
    fn cuda_fwd(&self, param: &mut CudaStorage, layout: &Layout) -> Result<()> {
        let Some((start, _)) = layout.contiguous_offsets() else {
            bail!("fused_adamw: the parameter must be contiguous")
        };
        let dev = param.device.clone();
        let [g0, m0, v0] = self.offsets;
        let s = &self.scalars;
        let p = param.as_cuda_slice::<f32>()?.slice(start..);
        let g = self.grad.as_cuda_slice::<f32>()?.slice(g0..);
        let m = self.m.as_cuda_slice::<f32>()?.slice(m0..);
        let v = self.v.as_cuda_slice::<f32>()?.slice(v0..);
        let n = self.n as i64;
        let args = scalar_args(s);
        let stream = dev.cuda_stream();
        let mut builder = stream.launch_builder(&self.kernels.adamw);
        builder.arg(&p).arg(&m).arg(&v).arg(&g).arg(&n);
        for a in &args {
            builder.arg(a);
        }
        // SAFETY: p, m, v, g are contiguous f32 views of at least n elements (checked by the
        // caller), matching adamw_f32's signature.
        unsafe { builder.launch(cfg(self.n)) }.w()?;
        Ok(())
    }
}

pub fn update(
    kernels: &AdamWKernels,
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    scalars: &AdamWScalars,
) -> Result<bool> {
    let n = param.elem_count();
    if [grad, exp_avg, exp_avg_sq]
        .iter()
        .any(|t| t.elem_count() != n)
        || !param.is_contiguous()
        || param.dtype() != DType::F32
    {
        return Ok(false);
    }
    let (Some((g, g0)), Some((m, m0)), Some((v, v0))) =
        (f32_cuda(grad), f32_cuda(exp_avg), f32_cuda(exp_avg_sq))
    else {
        return Ok(false);
    };
    let (Storage::Cuda(g), Storage::Cuda(m), Storage::Cuda(v)) = (&*g, &*m, &*v) else {
        return Ok(false);
    };
    param.inplace_op1(&AdamWOp {
        kernels,
        grad: g,
        m,
        v,
        offsets: [g0, m0, v0],
        n,
        scalars: *scalars,
    })?;
    Ok(true)
}

/// The eight scalars of `adamw_f32`, in its argument order.
fn scalar_args(s: &AdamWScalars) -> [f32; 8] {
    [
        s.grad_scale as f32,
        s.decay_factor as f32,
        (1.0 - s.beta1) as f32,
        s.beta2 as f32,
        (1.0 - s.beta2) as f32,
        s.inv_bias_correction2_sqrt as f32,
        s.eps as f32,
        s.step_size as f32,
    ]
}

/// A tensor's storage, borrowed while its address is in a launch's pointer table.
type Guard<'a> = Box<dyn std::ops::Deref<Target = Storage> + 'a>;

/// The device address of `t`'s first element (f32, contiguous, on CUDA), with the storage guard
/// that keeps it borrowed; `None` when `t` is not such a tensor.
fn f32_address<'a>(t: &'a Tensor, stream: &CudaStream) -> Result<Option<(u64, Guard<'a>)>> {
    if t.dtype() != DType::F32 {
        return Ok(None);
    }
    address(t, stream)
}

/// [`f32_address`] for an f32, bf16 or f16 tensor.
fn address<'a>(t: &'a Tensor, stream: &CudaStream) -> Result<Option<(u64, Guard<'a>)>> {
    let (storage, layout): (_, &Layout) = t.storage_and_layout();
    let Some((start, _)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let n = t.elem_count();
    let ptr = {
        let Storage::Cuda(s) = &*storage else {
            return Ok(None);
        };
        match t.dtype() {
            DType::F32 => {
                let view = s.as_cuda_slice::<f32>()?.slice(start..start + n);
                let (ptr, _record) = view.device_ptr(stream);
                ptr
            }
            DType::BF16 => {
                let view = s.as_cuda_slice::<half::bf16>()?.slice(start..start + n);
                let (ptr, _record) = view.device_ptr(stream);
                ptr
            }
            DType::F16 => {
                let view = s.as_cuda_slice::<half::f16>()?.slice(start..start + n);
                let (ptr, _record) = view.device_ptr(stream);
                ptr
            }
            _ => return Ok(None),
        }
    };
    Ok(Some((ptr, Box::new(storage))))
}

/// The launch of a multi-tensor kernel: tensor y in blockIdx.y, grid-stride over its elements in
/// up to `max_blocks` blocks of 256 threads (enough for the largest of them).
fn table_cfg(largest: usize, tensors: usize, max_blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            largest.div_ceil(256).clamp(1, max_blocks) as u32,
            tensors as u32,
            1,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The `kind` argument of the multi-tensor kernels for a 16-bit dtype.
fn half_kind(dtype: DType) -> Option<i32> {
    match dtype {
        DType::BF16 => Some(1),
        DType::F16 => Some(2),
        _ => None,
    }
}

/// [`update`] for every item in one launch; `false` (nothing changed) when the kernel does not
/// apply to some item.
pub fn update_many(kernels: &AdamWKernels, items: &[AdamWItem<'_>]) -> Result<bool> {
    let Some(first) = items.first() else {
        return Ok(true);
    };
    let candle_core::Device::Cuda(dev) = first.param.device() else {
        return Ok(false);
    };
    if items.len() > 65_535 {
        return Ok(false);
    }
    // Every copy in one 16-bit dtype (the kernel's `kind`), or none at all.
    let copy_dtypes: Vec<DType> = items
        .iter()
        .filter_map(|i| i.copy.map(Tensor::dtype))
        .collect();
    let kind = match copy_dtypes.first() {
        None => 0,
        Some(&dtype) => match half_kind(dtype) {
            Some(kind) if copy_dtypes.iter().all(|&d| d == dtype) => kind,
            _ => return Ok(false),
        },
    };
    let stream = dev.cuda_stream();
    let mut held = Vec::with_capacity(5 * items.len());
    let mut ptrs = Vec::with_capacity(5 * items.len());
    let mut lens = Vec::with_capacity(items.len());
    let mut scalars = Vec::with_capacity(8 * items.len());
    for item in items {
        let n = item.param.elem_count();
        let tensors = [item.param, item.exp_avg, item.exp_avg_sq, item.grad];
        if tensors
            .iter()
            .chain(item.copy.iter())
            .any(|t| t.elem_count() != n)
        {
            return Ok(false);
        }
        for t in tensors {
            let Some((ptr, storage)) = f32_address(t, &stream)? else {
                return Ok(false);
            };
            ptrs.push(ptr);
            held.push(storage);
        }
        match item.copy {
            None => ptrs.push(0),
            Some(copy) => {
                let Some((ptr, storage)) = address(copy, &stream)? else {
                    return Ok(false);
                };
                ptrs.push(ptr);
                held.push(storage);
            }
        }
        lens.push(n as i64);
        scalars.extend(scalar_args(&item.scalars));
    }
    let largest = items
        .iter()
        .map(|i| i.param.elem_count())
        .max()
        .unwrap_or(0);
    let ptrs = stream.clone_htod(&ptrs).w()?;
    let lens = stream.clone_htod(&lens).w()?;
    let scalars = stream.clone_htod(&scalars).w()?;
    let cfg = table_cfg(largest, items.len(), 128);
    let mut builder = stream.launch_builder(&kernels.adamw_multi);
    builder.arg(&ptrs).arg(&lens).arg(&scalars).arg(&kind);
    // SAFETY: ptrs holds, per item, the addresses of its parameter, moments and gradient (each
    // lens[i] contiguous f32 values) and of its copy (lens[i] values of the dtype `kind` names,
    // or 0), borrowed in `held` until the launch is queued and owned by the caller's tensors
    // until it runs; the kernel writes the parameter, the moments and the copy in place, as
    // `update`'s InplaceOp does, on the one stream every other op of the step uses.
    unsafe { builder.launch(cfg) }.w()?;
    drop(held);
    Ok(true)
}

pub fn global_norm(kernels: &AdamWKernels, grads: &[&Tensor]) -> Result<Option<f64>> {
    let Some(first) = grads.first() else {
        return Ok(Some(0.0));
    };
    let candle_core::Device::Cuda(dev) = first.device() else {
        return Ok(None);
    };
    if grads.len() > 65_535 {
        return Ok(None);
    }
    let stream = dev.cuda_stream();
    // One launch over a table of (start, length): the storages stay borrowed until it is queued.
    let mut held = Vec::with_capacity(grads.len());
    let (mut ptrs, mut lens) = (
        Vec::with_capacity(grads.len()),
        Vec::with_capacity(grads.len()),
    );
    for grad in grads {
        let Some((ptr, storage)) = f32_address(grad, &stream)? else {
            return Ok(None);
        };
        ptrs.push(ptr);
        lens.push(grad.elem_count() as i64);
        held.push(storage);
    }
    let total = dev.alloc_zeros::<f64>(1)?;
    let ptrs = stream.clone_htod(&ptrs).w()?;
    let lens = stream.clone_htod(&lens).w()?;
    let largest = grads.iter().map(|g| g.elem_count()).max().unwrap_or(0);
    let cfg = table_cfg(largest, grads.len(), 64);
    let mut builder = stream.launch_builder(&kernels.sum_squares_multi);
    builder.arg(&ptrs).arg(&lens).arg(&total);
    // SAFETY: ptrs[i] points at lens[i] contiguous f32 values of a storage borrowed in `held`
    // until the launch is queued (and kept alive by the tensors in `grads` until it runs); total
    // is one f64.
    unsafe { builder.launch(cfg) }.w()?;
    drop(held);
    let host = stream.clone_dtoh(&total).w()?;
    Ok(host.first().map(|s| s.sqrt()))
}

/// Every tensor of `tensors` converted to `dtype` (f32 <-> bf16/f16, every tensor of one dtype)
/// in one launch: one allocation whose views, each starting at a multiple of 8 elements (16
/// bytes, as the vectorized kernels want), are the results; `None` when the kernel does not
/// apply.
pub fn cast_many(
    kernels: &AdamWKernels,
    tensors: &[&Tensor],
    dtype: DType,
) -> Result<Option<Vec<Tensor>>> {
    let Some(first) = tensors.first() else {
        return Ok(Some(Vec::new()));
    };
    let candle_core::Device::Cuda(dev) = first.device() else {
        return Ok(None);
    };
    let from = first.dtype();
    let (func, kind) = match (from, dtype) {
        (DType::F32, to) => (&kernels.cast_from_f32, half_kind(to)),
        (from, DType::F32) => (&kernels.cast_to_f32, half_kind(from)),
        _ => (&kernels.cast_to_f32, None),
    };
    let Some(kind) = kind else {
        return Ok(None);
    };
    if tensors.len() > 65_535 || tensors.iter().any(|t| t.dtype() != from) {
        return Ok(None);
    }
    let mut starts = Vec::with_capacity(tensors.len());
    let mut total = 0usize;
    for t in tensors {
        starts.push(total);
        total += t.elem_count().div_ceil(8) * 8;
    }
    let stream = dev.cuda_stream();
    let flat = match dtype {
        // SAFETY (the three allocations): every element a view covers is written by the launch
        // below; the padding between views is never read.
        DType::F32 => crate::kernels::nvrtc::tensor_from_slice(
            unsafe { dev.alloc::<f32>(total.max(1))? },
            dev,
            total.max(1),
        ),
        DType::BF16 => crate::kernels::nvrtc::tensor_from_slice(
            unsafe { dev.alloc::<half::bf16>(total.max(1))? },
            dev,
            total.max(1),
        ),
        _ => crate::kernels::nvrtc::tensor_from_slice(
            unsafe { dev.alloc::<half::f16>(total.max(1))? },
            dev,
            total.max(1),
        ),
    };
    let mut outputs = Vec::with_capacity(tensors.len());
    for (t, &start) in tensors.iter().zip(&starts) {
        outputs.push(flat.narrow(0, start, t.elem_count())?.reshape(t.shape())?);
    }
    let mut held = Vec::with_capacity(2 * tensors.len());
    let mut ptrs = Vec::with_capacity(2 * tensors.len());
    let mut lens = Vec::with_capacity(tensors.len());
    for (t, out) in tensors.iter().zip(&outputs) {
        let (Some((src, s_guard)), Some((dst, d_guard))) =
            (address(t, &stream)?, address(out, &stream)?)
        else {
            return Ok(None);
        };
        ptrs.extend([src, dst]);
        held.extend([s_guard, d_guard]);
        lens.push(t.elem_count() as i64);
    }
    let largest = tensors.iter().map(|t| t.elem_count()).max().unwrap_or(0);
    let ptrs = stream.clone_htod(&ptrs).w()?;
    let lens = stream.clone_htod(&lens).w()?;
    let cfg = table_cfg(largest, tensors.len(), 128);
    let mut builder = stream.launch_builder(func);
    builder.arg(&ptrs).arg(&lens).arg(&kind);
    // SAFETY: per tensor, ptrs holds the address of its lens[i] contiguous source values (f32, or
    // the 16-bit dtype `kind` names) and of its output view of the same count in the other
    // dtype, borrowed in `held` until the launch is queued; the sources are the caller's tensors
    // and the outputs are kept alive by `outputs` on the same stream.
    unsafe { builder.launch(cfg) }.w()?;
    drop(held);
    Ok(Some(outputs))
}
