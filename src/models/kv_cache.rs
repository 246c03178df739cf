//! Self-attention key/value cache for incremental decoding, owned by the generation loop
//! (`generate`) and passed explicitly to the decoder so that beam search can reorder (or drop) rows
//! between steps.
//!
//! One preallocated `(layers, 2, rows, heads, capacity, head_dim)` buffer holds every layer's
//! keys then values; a step writes its new keys/values in place at the current length and
//! attends over the filled prefix. Reordering rows is one `index_select` for all layers.

use candle_core::{DType, Device, Result, Tensor};

use crate::kernels::fused::CacheGeometry;

/// The self-attention cache of every decoder layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// `(layers, 2, rows, heads, capacity, head_dim)`.
    buffer: Tensor,
    /// Positions already written (identical for every row: rows share the prompt and advance together).
    len: usize,
    shape: KvCacheShape,
}

/// Shape of a [`KvCache`].
#[derive(Debug, Clone, Copy)]
pub struct KvCacheShape {
    pub num_layers: usize,
    pub rows: usize,
    pub num_heads: usize,
    /// Maximum number of positions (the generation's `max_length`).
    pub capacity: usize,
    pub head_dim: usize,
}

impl KvCache {
    /// Allocates the zeroed buffer.
    pub fn new(shape: KvCacheShape, dtype: DType, device: &Device) -> Result<Self> {
        let dims = (
            shape.num_layers,
            2,
            shape.rows,
            shape.num_heads,
            shape.capacity,
            shape.head_dim,
        );
        let buffer = Tensor::zeros(dims, dtype, device)?;
        Ok(Self {
            buffer,
            len: 0,
            shape,
        })
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of rows (sequences) held.
    pub fn rows(&self) -> usize {
        self.shape.rows
    }

    /// Geometry of every layer's buffer (for the fused CUDA kernels).
    pub fn geometry(&self) -> CacheGeometry {
        CacheGeometry {
            rows: self.shape.rows,
            heads: self.shape.num_heads,
            cap: self.shape.capacity,
            head_dim: self.shape.head_dim,
        }
    }

    /// The `(2, rows, heads, capacity, head_dim)` buffer of `layer` (a view).
    pub fn layer(&self, layer: usize) -> Result<Tensor> {
        if layer >= self.shape.num_layers {
            candle_core::bail!(
                "kv cache has no layer {layer} ({} layers)",
                self.shape.num_layers
            );
        }
        self.buffer.get(layer)
    }

    /// Fails unless `t` more positions fit.
    pub fn check_room(&self, t: usize) -> Result<()> {
        if self.len + t > self.shape.capacity {
            candle_core::bail!(
                "kv cache overflow: {} positions requested, capacity {}",
                self.len + t,
                self.shape.capacity
            );
        }
        Ok(())
    }

    /// Writes `keys`/`values` `(rows, heads, t, head_dim)` (contiguous) of `layer` at the current
    /// length and returns views over everything cached for that layer, `(rows, heads, len + t, head_dim)`.
    /// Call [`KvCache::advance`] once every layer has appended.
    pub fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = keys.dim(2)?;
        self.check_room(t)?;
        let buffer = self.layer(layer)?;
        let (cached_keys, cached_values) = (buffer.get(0)?, buffer.get(1)?);
        cached_keys.slice_set(keys, 2, self.len)?;
        cached_values.slice_set(values, 2, self.len)?;
        let end = self.len + t;
        Ok((
            cached_keys.narrow(2, 0, end)?,
            cached_values.narrow(2, 0, end)?,
        ))
    }

    /// Forgets every position (the buffer keeps its rows and its stale contents, which no step
    /// reads: attention covers positions below the length only), so the same buffer serves the
    /// next batch of equal size.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Back to `len` positions (at most the current length): undoes an [`KvCache::advance`]
    /// whose work never ran.
    pub fn rewind(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks `t` more positions as written (after a forward pass over `t` tokens).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps rows `indices` (u32, on the cache's device) in that order: beam reordering,
    /// expanding one row per image to `num_beams` rows, or dropping finished rows.
    pub fn select_rows(&mut self, indices: &Tensor) -> Result<()> {
        self.buffer = self.buffer.index_select(indices, 2)?;
        self.shape.rows = indices.dim(0)?;
        Ok(())
    }
}
