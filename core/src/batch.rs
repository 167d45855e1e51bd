//! The batched forward: several sequences in one step, each at its own position with
//! its own KV blocks, as the engine ([`crate::engine`]) runs them.
//!
//! The KV memory of a [`BatchedLM`] is a store of fixed-size blocks that the model
//! allocates once ([`BatchedLM::allocate_kv`]) and the engine hands out: a sequence is
//! a list of block ids (its block table) covering its positions in order, so blocks of
//! a shared prefix can belong to several sequences at once. The model never decides
//! which block holds what; it writes the chunk's keys and values where the table says
//! and attends over the table.
//!
//! **Bit-identical whatever the batch.** A row's logits must not depend on the other
//! sequences of the step, on how its prompt was cut into chunks, or on whether its
//! prefix blocks were computed now or by an earlier request: every product is computed
//! row by row in a fixed order (no kernel chosen by the number of rows), and attention
//! sums each query's keys in position order. The conformance suite checks it for every
//! entry whose attribute says `batching = true`.

use candle_core::Tensor;

use crate::Result;

/// Which logits a chunk wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (a prompt chunk that does not end the prompt).
    None,
    /// The last position's (the next token).
    Last,
    /// Every position's (scoring, perplexity).
    All,
}

impl Logits {
    /// How many rows of logits a chunk of `n` tokens returns.
    pub fn rows(self, n: usize) -> usize {
        match self {
            Logits::None => 0,
            Logits::Last => 1.min(n),
            Logits::All => n,
        }
    }
}

/// One sequence's part of a batched step.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// The tokens to run, at positions `offset..offset + tokens.len()`.
    pub tokens: &'a [u32],
    /// The sequence's KV blocks already hold positions `0..offset`.
    pub offset: usize,
    /// The sequence's blocks in position order: block `i` holds positions
    /// `i * block_size..(i + 1) * block_size`. It covers `offset + tokens.len()`.
    pub blocks: &'a [u32],
    pub logits: Logits,
}

/// What one position costs in KV memory, for sizing the block store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    /// The layers that keep keys and values.
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Values a position keeps besides those keys and values, over all layers (LFM2's
    /// convolution layers keep their input row, `hidden` values each); 0 for most.
    pub other_values: usize,
    /// Bytes per stored value (4: f32).
    pub bytes_per_value: usize,
}

impl KvShape {
    /// Everything one position keeps in the block store, over every layer.
    pub fn bytes_per_token(&self) -> usize {
        (2 * self.layers * self.kv_heads * self.head_dim + self.other_values) * self.bytes_per_value
    }
}

/// A model that runs several sequences in one forward over KV blocks. Returned by
/// [`crate::CausalLM::batched`] for the entries whose attribute says `batching = true`.
pub trait BatchedLM: Send {
    /// The KV memory one position takes.
    fn kv_shape(&self) -> KvShape;

    /// Allocates the block store: `blocks` blocks of `block_size` positions, replacing
    /// any earlier store (its contents are gone).
    fn allocate_kv(&mut self, blocks: usize, block_size: usize) -> Result<()>;

    /// Runs every chunk (each sequence at most once) and returns, per chunk, its logits
    /// as f32 `[rows, vocab]` with `rows` = [`Logits::rows`]. Writes each chunk's keys
    /// and values into its blocks. A chunk's results are the same bits whatever else
    /// runs in the step (see the module's documentation).
    fn forward_batch(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Tensor>>;
}
