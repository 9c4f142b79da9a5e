//! The allocator's side of the memory bound: one arena for every thread, and freed heap goes
//! back to the kernel after the few moments that allocate a lot at once (the BTF parse, the
//! start-up cgroup scan, a full listing of containerd), so the resident size is what the
//! daemon keeps, not its peaks.

/// Returns freed heap to the kernel (glibc's `malloc_trim`, which also releases free pages
/// inside the heap and in every thread's arena); nothing to do with musl's allocator.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Keeps every thread on glibc's main arena (`M_ARENA_MAX` 1); call before any thread starts.
///
/// glibc gives each thread that allocates while another holds the lock an arena of its own
/// (up to 8 per core), and an arena's freed memory is reused only by the threads that use it.
/// At start the cgroup scan, containerd's listing, the spool's delivery and the forecast's
/// first tick each fill one, so their peaks add up. On the memory bench's node (100,000
/// cgroups, 10,000 containers, a full spool; commit `0ed31d6`) the peak RSS was 77.7 MiB with
/// glibc's default, 64.7 MiB with two arenas and 63.5 MiB with one (`MALLOC_ARENA_MAX`).
/// Small allocations still come from each thread's own cache (tcache) without the lock.
pub fn share_one_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}
