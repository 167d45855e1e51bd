//! The KV blocks of the engine's store: which are free, which each sequence holds, and
//! the prefix cache (full blocks of earlier requests, found again by their tokens).
//!
//! A full block is named by its tokens and the name of the block before it (a chain,
//! so a block is only ever matched after the same whole prefix). Names are SipHash with
//! keys drawn at random once per process: with the fixed keys of `DefaultHasher::new()`
//! anyone could compute two prompts whose names collide offline, and a request would
//! then reuse the KV of another client's different text (vLLM's prefix cache had a
//! flaw of this kind). Keyed, a collision is left to chance: about one in 2^64 per
//! cached block looked at. Blocks a sequence
//! holds are counted; when the count falls to zero a named block stays in the cache,
//! evictable least-recently-used, and an unnamed one goes back to the free list.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;

/// The process's hash keys for block names (random, drawn once).
fn keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// The name of a full block: the hash of its prefix's name and its tokens.
pub fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = keys().build_hasher();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The names of the full blocks of `tokens`, in order.
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut parent = 0;
    tokens
        .chunks_exact(block_size)
        .map(|b| {
            parent = chain_hash(parent, b);
            parent
        })
        .collect()
}

pub struct BlockManager {
    pub block_size: usize,
    total: usize,
    free: Vec<u32>,
    refs: Vec<u32>,
    name: Vec<Option<u64>>,
    cached: HashMap<u64, u32>,
    /// Named blocks no sequence holds, by last use.
    evictable: BTreeMap<u64, u32>,
    last_use: Vec<u64>,
    tick: u64,
}

impl BlockManager {
    pub fn new(total: usize, block_size: usize) -> Self {
        Self {
            block_size,
            total,
            // Popped from the end: block 0 first.
            free: (0..total as u32).rev().collect(),
            refs: vec![0; total],
            name: vec![None; total],
            cached: HashMap::new(),
            evictable: BTreeMap::new(),
            last_use: vec![0; total],
            tick: 0,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Blocks that can be handed out now (free, or cached and held by nobody).
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks some sequence holds.
    pub fn used(&self) -> usize {
        self.total - self.available()
    }

    /// Blocks needed for `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }

    /// A block for a sequence: a free one, else the least recently used cached one.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (&t, &b) = self.evictable.iter().next()?;
                self.evictable.remove(&t);
                if let Some(n) = self.name[b as usize].take() {
                    self.cached.remove(&n);
                }
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// How many leading blocks of `hashes` are cached, and how many of those nobody
    /// holds (they would leave the evictable pool when taken).
    pub fn peek(&self, hashes: &[u64]) -> (usize, usize) {
        let mut idle = 0;
        let n = hashes
            .iter()
            .take_while(|h| match self.cached.get(h) {
                Some(&b) => {
                    idle += usize::from(self.refs[b as usize] == 0);
                    true
                }
                None => false,
            })
            .count();
        (n, idle)
    }

    /// Takes the leading cached blocks of `hashes` for a sequence.
    pub fn take_prefix(&mut self, hashes: &[u64]) -> Vec<u32> {
        let mut out = Vec::new();
        for h in hashes {
            let Some(&b) = self.cached.get(h) else { break };
            if self.refs[b as usize] == 0 {
                self.evictable.remove(&self.last_use[b as usize]);
            }
            self.refs[b as usize] += 1;
            out.push(b);
        }
        out
    }

    /// Names a block that a sequence has filled, so later prompts find it.
    pub fn register(&mut self, block: u32, hash: u64) {
        if self.name[block as usize].is_none() && !self.cached.contains_key(&hash) {
            self.name[block as usize] = Some(hash);
            self.cached.insert(hash, block);
        }
    }

    /// A sequence lets go of its blocks.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            let r = &mut self.refs[b as usize];
            *r -= 1;
            if *r > 0 {
                continue;
            }
            if self.name[b as usize].is_some() {
                self.tick += 1;
                self.last_use[b as usize] = self.tick;
                self.evictable.insert(self.tick, b);
            } else {
                self.free.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are keyed: not what the public fixed-key hasher gives for the same input,
    /// so no one can compute colliding prompts in advance; within the process they are
    /// stable, so a prompt finds its blocks again.
    #[test]
    fn block_names_are_keyed_and_stable() {
        let unkeyed = |parent: u64, tokens: &[u32]| {
            let mut h = std::hash::DefaultHasher::new();
            parent.hash(&mut h);
            tokens.hash(&mut h);
            h.finish()
        };
        let tokens = [1u32, 2, 3, 4];
        assert_ne!(chain_hash(0, &tokens), unkeyed(0, &tokens));
        assert_eq!(chain_hash(0, &tokens), chain_hash(0, &tokens));
        assert_eq!(block_hashes(&tokens, 2), block_hashes(&tokens, 2));
    }

    #[test]
    fn a_released_prefix_is_found_again_and_evicted_last_used_first() {
        let mut m = BlockManager::new(4, 2);
        let toks = [1, 2, 3, 4, 5];
        let hashes = block_hashes(&toks, 2);
        assert_eq!(hashes.len(), 2);
        let a: Vec<u32> = (0..3).map(|_| m.allocate().unwrap()).collect();
        m.register(a[0], hashes[0]);
        m.register(a[1], hashes[1]);
        assert_eq!(m.available(), 1);
        m.release(&a);
        // Two named blocks are cached, one unnamed went back to the free list.
        assert_eq!(m.available(), 4);
        assert_eq!(m.peek(&hashes), (2, 2));
        let again = m.take_prefix(&hashes);
        assert_eq!(again, a[..2]);
        assert_eq!(m.available(), 2);
        // A different first block never matches the second block's name.
        assert_eq!(m.peek(&block_hashes(&[9, 9, 3, 4], 2)), (0, 0));
        m.release(&again);
        // Four allocations: the free blocks, then the cached ones, oldest first.
        let b: Vec<u32> = (0..4).map(|_| m.allocate().unwrap()).collect();
        assert_eq!(b.len(), 4);
        assert!(m.allocate().is_none());
        assert_eq!(m.peek(&hashes), (0, 0));
    }
}
