//! Settings of the whole process that a binary makes first thing in `main`: the
//! number of CPU threads, and how the allocator treats large freed buffers. A library
//! never changes them behind its caller's back; the `zoo` binary calls both.

/// Fixes the number of CPU threads candle uses to the number it would pick, once.
///
/// Unless `RAYON_NUM_THREADS` is set, candle counts the physical cores anew on every
/// f32 matrix product by reading and parsing `/proc/cpuinfo`: a few hundred reads per
/// second in decoding (two attention products per layer per token), about 12 % of
/// SmolLM2's decode time. With the variable set the lookup is an environment read.
/// The `zoo` binary calls this first thing in `main`.
///
/// # Safety
/// It may set an environment variable: call it before the program starts threads
/// (see [`std::env::set_var`]).
pub unsafe fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees no other thread reads the environment now.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// The largest buffer the allocator keeps in its heap instead of mapping it alone.
const KEEP_BUFFERS_UP_TO: libc::c_int = 1 << 30;

/// Keeps the pages of large freed buffers in the process for the next ones; whether the
/// allocator took the setting (glibc on Linux; elsewhere nothing is done: `false`).
///
/// glibc gives every allocation above its mmap threshold (32 MiB at most by its own
/// rule) pages of its own and returns them to the system when it is freed. A long
/// prompt's forward allocates and frees dozens of such buffers (Qwen2.5's
/// 2048 x 4864 f32 activations are 40 MiB), so each came back as fresh pages, faulted
/// in and zeroed one by one, with the other threads' TLBs flushed at every unmap.
/// With the mmap and trim thresholds raised to 1 GiB those buffers are taken from,
/// and given back to, the heap: Qwen2.5 `zoo bench -p 2048` 126.4 / 150.6 -> 159.8 /
/// 170.5 tok/s (builds alternating), the same peak RSS. The price: between prompts the resident
/// memory stays near its peak instead of falling back (loading still trims its own
/// garbage, `malloc_trim`, which these settings do not stop).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` takes the allocator's lock; these two parameters only
        // change when memory is mapped or returned, never memory in use.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BUFFERS_UP_TO) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BUFFERS_UP_TO) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn glibc_takes_both_thresholds() {
        assert!(super::keep_freed_memory());
    }
}
