//! What a loaded model costs in memory: the process's resident and peak resident set
//! (Linux `/proc/self/status`), and the report `zoo::load` fills in
//! ([`LoadMemory`]): the checkpoint's size on disk and how much the resident set grew
//! while it loaded (the weights as they sit in memory, plus the tokenizer).
//!
//! On systems without `/proc` the figures are `None`; nothing fails for want of them.

/// The resident set size of this process, bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// The peak resident set size of this process so far, bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Memory figures of one load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadMemory {
    /// The checkpoint's size on disk (the GGUF file, or the safetensors shards).
    pub checkpoint_bytes: u64,
    /// How much the resident set grew while loading (weights in memory and the
    /// tokenizer; the file's pages are released as tensors are copied out of the map).
    pub resident_growth_bytes: Option<u64>,
    /// The process's peak resident set right after loading.
    pub peak_rss_bytes: Option<u64>,
}

impl std::fmt::Display for LoadMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        write!(f, "checkpoint {:.1} MiB", mib(self.checkpoint_bytes))?;
        if let Some(g) = self.resident_growth_bytes {
            write!(f, ", resident after load +{:.1} MiB", mib(g))?;
        }
        if let Some(p) = self.peak_rss_bytes {
            write!(f, ", peak RSS {:.1} MiB", mib(p))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_and_peak_are_read_and_ordered() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let (rss, peak) = (rss_bytes().unwrap(), peak_rss_bytes().unwrap());
        assert!(rss > 0 && peak >= rss, "rss {rss} peak {peak}");
        // 64 MiB touched raises the resident set by about as much.
        let v = vec![1u8; 64 << 20];
        let grown = rss_bytes().unwrap();
        assert!(
            grown >= rss + (48 << 20),
            "rss {rss} -> {grown} with {} bytes touched",
            v.len()
        );
    }
}
