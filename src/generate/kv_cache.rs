//! Self-attention key/value cache for incremental decoding, owned by the generation loop and
//! passed explicitly to the decoder so that beam search can reorder (or drop) rows between steps.
//!
//! Each layer holds preallocated `(rows, heads, capacity, head_dim)` buffers; a step writes its new
//! keys/values in place at the current length and attends over the filled prefix.

use candle_core::{DType, Device, Result, Tensor};

/// Keys and values of one decoder layer, `(rows, heads, capacity, head_dim)` each.
#[derive(Debug, Clone)]
struct LayerKv {
    keys: Tensor,
    values: Tensor,
}

/// The self-attention cache of every decoder layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// Positions already written (identical for every row: rows share the prompt and advance together).
    len: usize,
    capacity: usize,
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
    /// Allocates zeroed buffers.
    pub fn new(shape: KvCacheShape, dtype: DType, device: &Device) -> Result<Self> {
        let dims = (shape.rows, shape.num_heads, shape.capacity, shape.head_dim);
        let layers = (0..shape.num_layers)
            .map(|_| {
                Ok(LayerKv {
                    keys: Tensor::zeros(dims, dtype, device)?,
                    values: Tensor::zeros(dims, dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity: shape.capacity,
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
    pub fn rows(&self) -> Result<usize> {
        match self.layers.first() {
            Some(layer) => layer.keys.dim(0),
            None => Ok(0),
        }
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
        let end = self.len + t;
        if end > self.capacity {
            candle_core::bail!(
                "kv cache overflow: {end} positions requested, capacity {}",
                self.capacity
            );
        }
        let Some(slot) = self.layers.get(layer) else {
            candle_core::bail!(
                "kv cache has no layer {layer} ({} layers)",
                self.layers.len()
            );
        };
        slot.keys.slice_set(keys, 2, self.len)?;
        slot.values.slice_set(values, 2, self.len)?;
        Ok((slot.keys.narrow(2, 0, end)?, slot.values.narrow(2, 0, end)?))
    }

    /// Marks `t` more positions as written (after a forward pass over `t` tokens).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps rows `indices` (u32, on the cache's device) in that order: beam reordering,
    /// expanding one row per image to `num_beams` rows, or dropping finished rows.
    pub fn select_rows(&mut self, indices: &Tensor) -> Result<()> {
        for layer in &mut self.layers {
            layer.keys = layer.keys.index_select(indices, 0)?;
            layer.values = layer.values.index_select(indices, 0)?;
        }
        Ok(())
    }
}
