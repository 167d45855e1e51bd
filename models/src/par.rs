//! Work split over candle's barrier pool, whose threads stay warm between tokens, and
//! the one place where a raw pointer into an output crosses to the pool's threads.
//!
//! [`par_chunks_mut`] hands each call its own part of a slice and is safe to call (the
//! attention step, GELU, the quantized kernels' activation rows and tiles use it);
//! [`SendPtr`] is the raw form for outputs whose parts are not contiguous (a unit of
//! the quantized kernels' weight rows writes a range of columns of every output row),
//! where the caller vouches that no element is written twice at a time.
//!
//! Neither changes what a thread computes or in which order it sums: each item is
//! computed by one thread, whole, as on the calling thread.
//!
//! [`on_threads`] is the other way to use the cores: whole jobs (a batched step's
//! groups of sequences) side by side, one per thread, each computing [`alone`] (every
//! `par_for` inside it runs inline), so that no thread waits on another between
//! operations.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Range;

thread_local! {
    /// Set while this thread runs a job of [`on_threads`]: work is not split further.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// The threads a product is split over: the barrier pool's workers and the caller.
pub(crate) fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

/// Runs `f` with every [`par_for`] inside it (on this thread) inline.
pub(crate) fn alone<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the flag back however `f` ends (a panic too).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALONE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ALONE.with(|a| a.replace(true)));
    f()
}

/// Runs each job on a thread of its own (the first on the calling thread, the others
/// on scoped threads), each [`alone`], and returns their results in order.
pub(crate) fn on_threads<T: Send, F: FnOnce() -> T + Send>(jobs: Vec<F>) -> Vec<T> {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let others: Vec<_> = jobs.map(|job| s.spawn(move || alone(job))).collect();
        let mut out = vec![alone(first)];
        for h in others {
            match h.join() {
                Ok(r) => out.push(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// Runs `f` on ranges of `0..n` that together cover it, each index in exactly one
/// range: over candle's barrier pool when `parallel` (its `execute_chunked`, whose
/// shared cursor hands out disjoint ranges; inline when already on a pool thread), else
/// (or inside [`alone`]) once with `0..n` on the calling thread.
pub(crate) fn par_for(n: usize, parallel: bool, f: impl Fn(Range<usize>) + Sync) {
    if parallel && !ALONE.with(|a| a.get()) {
        candle_core::utils::barrier_pool().execute_chunked(n, f);
    } else {
        f(0..n);
    }
}

/// `data` cut into chunks of `chunk_len` values (the last one may be shorter), with
/// `f(chunks, part)` run for ranges of chunks that cover them all ([`par_for`]): `part`
/// is the values of those chunks, `data[chunks.start * chunk_len..]` up to
/// `chunks.end * chunk_len` or the end of `data`. Nothing runs when there is no chunk
/// (empty `data`, or `chunk_len` 0).
pub(crate) fn par_chunks_mut<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    parallel: bool,
    f: impl Fn(Range<usize>, &mut [T]) + Sync,
) {
    if chunk_len == 0 || data.is_empty() {
        return;
    }
    let (len, chunks) = (data.len(), data.len().div_ceil(chunk_len));
    let data = SendPtr::new(data);
    par_for(chunks, parallel, |range| {
        let start = range.start * chunk_len;
        let end = (range.end * chunk_len).min(len);
        // SAFETY: `par_for` gives each chunk to one range only, so the parts of
        // concurrent calls never overlap, and each lives only for its call.
        let part = unsafe { data.slice_mut(start, end - start) };
        f(range, part);
    });
}

/// A pointer to the values of a mutably borrowed slice that may be sent to the pool's
/// threads. It holds the borrow for `'a`, so it cannot outlive the slice; reading or
/// writing through it is `unsafe`, with one contract: **no element is accessed by two
/// threads at a time** (each thread writes its own elements, as a partition of the
/// output fixed before the pool runs).
pub(crate) struct SendPtr<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `SendPtr` only moves `T`s into the borrowed slice from other threads, and
// its unsafe methods require that no two threads touch the same element; that is sound
// when `T` may be sent.
unsafe impl<T: Send> Send for SendPtr<'_, T> {}
// SAFETY: as for `Send`: shared, it still only writes elements that one thread owns.
unsafe impl<T: Send> Sync for SendPtr<'_, T> {}

impl<T> Clone for SendPtr<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<'_, T> {}

impl<'a, T> SendPtr<'a, T> {
    pub(crate) fn new(data: &'a mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// `data[start..start + len]` (bounds checked).
    ///
    /// # Safety
    ///
    /// While the returned slice is alive no other thread (nor another slice or
    /// [`SendPtr::write`] here) may access any of its elements.
    pub(crate) unsafe fn slice_mut(self, start: usize, len: usize) -> &'a mut [T] {
        assert!(start <= self.len && len <= self.len - start);
        // SAFETY: in bounds (above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// `data[i] = v`, without dropping the old value (for plain numbers).
    ///
    /// # Safety
    ///
    /// `i` is within the slice, and no other thread accesses element `i` meanwhile.
    #[inline]
    pub(crate) unsafe fn write(self, i: usize, v: T) {
        debug_assert!(i < self.len);
        // SAFETY: in bounds and exclusive by the caller's contract.
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// Values that the jobs of [`on_threads`] write and read at the same time, each job its
/// own part (a layer's KV block store in a split step: each group writes its
/// sequences' blocks and reads them and the shared prefix blocks nobody writes). Every
/// access is `unsafe`, with one contract: **no value is written by one thread while
/// another reads or writes it**.
pub(crate) struct SharedCells(Box<[std::cell::UnsafeCell<f32>]>);

// SAFETY: the values are plain f32s; concurrent access is only through the unsafe
// methods, whose contract excludes a value written by one thread and touched by another.
unsafe impl Sync for SharedCells {}

impl SharedCells {
    pub(crate) fn new(values: Vec<f32>) -> Self {
        let raw = Box::into_raw(values.into_boxed_slice()) as *mut [std::cell::UnsafeCell<f32>];
        // SAFETY: `UnsafeCell<f32>` has the layout of `f32` (`repr(transparent)`), so the
        // boxed slice's allocation is a valid `[UnsafeCell<f32>]` of the same length.
        Self(unsafe { Box::from_raw(raw) })
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `values[start..start + len]` (bounds checked).
    ///
    /// # Safety
    ///
    /// No other thread writes any of these values while the slice lives.
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &[f32] {
        let cells = &self.0[start..start + len];
        // SAFETY: in bounds (the indexing above); `UnsafeCell<f32>` is laid out as f32,
        // and by the caller's contract nothing writes these values meanwhile.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const f32, len) }
    }

    /// `values[i] = v` (bounds checked).
    ///
    /// # Safety
    ///
    /// No other thread reads or writes value `i` meanwhile.
    pub(crate) unsafe fn set(&self, i: usize, v: f32) {
        // SAFETY: exclusive for this value by the caller's contract.
        unsafe { *self.0[i].get() = v }
    }
}

impl Clone for SharedCells {
    fn clone(&self) -> Self {
        // SAFETY: values are only written by the jobs of a split step, which run while
        // their owner (a decoder in `forward_batch`) is borrowed mutably: no one else
        // holds it to clone it then.
        Self::new(unsafe { self.slice(0, self.len()) }.to_vec())
    }
}

impl Default for SharedCells {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl std::fmt::Debug for SharedCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedCells({} values)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk is handed out once, with its own values, on the pool and off it,
    /// including a short last chunk and more chunks than threads.
    #[test]
    fn par_chunks_mut_covers_each_chunk_once() {
        for (len, chunk, parallel) in [
            (0, 3, true),
            (10, 0, true),
            (1, 4, false),
            (10, 3, false),
            (10, 3, true),
            (1000, 7, true),
            (4096, 64, true),
        ] {
            let mut v = vec![0usize; len];
            par_chunks_mut(&mut v, chunk, parallel, |chunks, part| {
                assert_eq!(
                    part.len(),
                    (chunks.end * chunk).min(len) - chunks.start * chunk
                );
                for (i, x) in part.iter_mut().enumerate() {
                    *x += chunks.start * chunk + i + 1;
                }
            });
            let want: Vec<usize> = (1..=len).map(|i| if chunk == 0 { 0 } else { i }).collect();
            assert_eq!(v, want, "{len} values in chunks of {chunk}");
        }
    }

    #[test]
    fn send_ptr_writes_scattered_elements() {
        let mut v = vec![0f32; 64];
        let p = SendPtr::new(&mut v);
        // Units of 4 columns of a 4 x 16 output: not contiguous.
        par_for(4, true, |units| {
            for u in units {
                for i in 0..4 {
                    for c in 4 * u..4 * u + 4 {
                        // SAFETY: unit `u` alone writes columns 4u..4u+4.
                        unsafe { p.write(i * 16 + c, (i * 16 + c) as f32) };
                    }
                }
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    }
}
