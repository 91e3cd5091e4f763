//! The process's memory: one heap for every thread, its free pages handed back, the resident
//! size read from /proc.

/// Hands the allocator's free memory back to the system (glibc's `malloc_trim`). glibc serves
/// freed frame-sized buffers from a heap it does not shrink by itself, so without this a
/// daemon's resident memory steps up by megabytes some thousand frames in and stays there.
/// Called with each stats message, off the per-frame path (pinning glibc's mmap threshold
/// instead made every large tensor a fresh mmap and inference 1.8x slower). A no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes the allocator's
    // own locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from glibc's one main heap, so that [`release_free_memory`] can
/// hand back all the free memory there is. Without it glibc gives threads heaps of their own (up
/// to 8 per core), and `malloc_trim` never shrinks the top of such a heap: only the heap's own
/// frees do, past a threshold that grows to twice the largest freed tensor. A catalog rebuild's
/// thread left 6-13 MB resident that way after each reload (the SIGHUP test: "first reloads'
/// one-time cost" 6.0-7.8 MB and one run in six past +5% after the next reload; 0.6-0.8 MB and
/// +0.6-0.9% with one heap). The daemon's threads allocate little beside the loop's tensors, so
/// the shared lock costs nothing measurable (BENCHMARKS.md). Call before any thread starts; a
/// no-op off glibc.
pub fn use_one_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A KiB field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, `pid` being a number or
/// `self`; 0 where /proc or the field is missing.
pub fn proc_status_kb(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line =
        status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':'))).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// This process's resident memory in KiB (0 where /proc is missing).
pub fn rss_kb() -> u64 {
    proc_status_kb("self", "VmRSS")
}

/// This process's peak resident memory in KiB (0 where /proc is missing).
pub fn peak_rss_kb() -> u64 {
    proc_status_kb("self", "VmHWM")
}
