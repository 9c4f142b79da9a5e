//! The allocator's side of the memory bound: freed heap goes back to the kernel after the
//! few moments that allocate a lot at once (the BTF parse, the start-up cgroup scan, a full
//! listing of containerd), so the resident size is what the daemon keeps, not its peaks.

/// Returns freed heap to the kernel (glibc's `malloc_trim`, which also releases free pages
/// inside the heap and in every thread's arena); nothing to do with musl's allocator.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
