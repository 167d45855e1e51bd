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
//! groups of sequences) side by side, one per thread (the caller's and helper threads
//! started once), each computing [`alone`] (every `par_for` inside it runs inline), so
//! that no thread waits on another between operations.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::{mpsc, OnceLock};

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
/// on [`helpers`], threads started once that wait between calls), each [`alone`], and
/// returns their results in order. Returns only once every job has ended (a panic in
/// one is resumed here, after the others end).
pub(crate) fn on_threads<T: Send, F: FnOnce() -> T + Send>(jobs: Vec<F>) -> Vec<T> {
    if ALONE.with(|a| a.get()) {
        // Inside a job already (a helper may be running it): one after the other.
        return jobs.into_iter().map(|job| job()).collect();
    }
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else {
        return Vec::new();
    };
    let (tx, rx) = mpsc::channel::<(usize, std::thread::Result<T>)>();
    let helpers = helpers();
    let mut pending = Pending { rx, left: 0 };
    for (i, job) in jobs.enumerate() {
        let tx = tx.clone();
        let run: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| alone(job)));
            let _ = tx.send((i, r));
        });
        // SAFETY: the job borrows from this call's caller; `pending` waits for its
        // result (sent as its last act) before this function returns or unwinds, so
        // nothing it borrows is gone while it runs.
        let run: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(run) };
        helpers[i % helpers.len()]
            .send(run)
            .expect("the helper threads never stop");
        pending.left += 1;
    }
    drop(tx);
    let first = alone(first);
    let mut rest: Vec<Option<T>> = (0..pending.left).map(|_| None).collect();
    let mut panic = None;
    while pending.left > 0 {
        let (i, r) = pending.rx.recv().expect("every job sends its result");
        pending.left -= 1;
        match r {
            Ok(v) => rest[i] = Some(v),
            Err(p) => panic = Some(p),
        }
    }
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    std::iter::once(first)
        .chain(rest.into_iter().map(|v| v.expect("each job answered once")))
        .collect()
}

/// A job sent to a helper thread, its borrows' lifetime erased (see `on_threads`).
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The results `on_threads` still waits for: waited for on drop too (a panic in the
/// calling thread's own job), so that no job outlives what it borrows.
struct Pending<T> {
    rx: mpsc::Receiver<(usize, std::thread::Result<T>)>,
    left: usize,
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        while self.left > 0 && self.rx.recv().is_ok() {
            self.left -= 1;
        }
    }
}

/// One thread per pool worker (`threads() - 1`), started on first use and parked on
/// its queue between calls: a step's other groups start at once on a thread that
/// stays where the scheduler put it, instead of on a thread made for each step.
fn helpers() -> &'static [mpsc::Sender<Job>] {
    static HELPERS: OnceLock<Vec<mpsc::Sender<Job>>> = OnceLock::new();
    HELPERS.get_or_init(|| {
        (0..threads().saturating_sub(1).max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("zoo-group-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })
                    .expect("starting a helper thread");
                tx
            })
            .collect()
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

    /// Results in job order, each job alone, borrowing the caller's data; repeated
    /// calls reuse the helpers; a call from inside a job runs its jobs in turn.
    #[test]
    fn on_threads_runs_every_job_alone_and_in_order() {
        let data: Vec<usize> = (0..1000).collect();
        for round in 0..50 {
            let jobs: Vec<_> = (0..3)
                .map(|j| {
                    let data = &data;
                    move || {
                        assert!(ALONE.with(|a| a.get()), "job {j} not alone");
                        let nested = on_threads(vec![|| 1usize, || 2]);
                        (j, data.iter().sum::<usize>() + round, nested)
                    }
                })
                .collect();
            let out = on_threads(jobs);
            assert_eq!(
                out,
                (0..3)
                    .map(|j| (j, 499_500 + round, vec![1, 2]))
                    .collect::<Vec<_>>()
            );
            assert!(!ALONE.with(|a| a.get()), "the flag is put back");
        }
    }

    /// A job's panic reaches the caller, only after the other jobs have ended (they
    /// borrow the caller's stack).
    #[test]
    fn on_threads_resumes_a_panic_after_every_job_ends() {
        use std::sync::atomic::{AtomicBool, Ordering};
        for panicking in [0usize, 1] {
            let slow_done = AtomicBool::new(false);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let slow_done = &slow_done;
                let jobs: Vec<Box<dyn FnOnce() + Send + '_>> = (0..2usize)
                    .map(|j| -> Box<dyn FnOnce() + Send + '_> {
                        Box::new(move || {
                            if j == panicking {
                                panic!("job {j}");
                            }
                            std::thread::sleep(std::time::Duration::from_millis(300));
                            slow_done.store(true, Ordering::SeqCst);
                        })
                    })
                    .collect();
                on_threads(jobs)
            }));
            assert!(r.is_err(), "job {panicking}'s panic was resumed");
            assert!(
                slow_done.load(Ordering::SeqCst),
                "the other job ended first"
            );
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
