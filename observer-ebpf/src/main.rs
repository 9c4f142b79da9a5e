//! oom-observer's kernel programs.
//!
//! Every kernel structure is read at an offset the daemon computed from the running
//! kernel's BTF and stored in [`maps::LAYOUT`] before loading; no offset is compiled in, so
//! this one object serves every kernel (CO-RE by load-time offsets). A field whose offset is
//! unknown is reported as not seen, never guessed.
//!
//! - [`kernel`]: typed views of the kernel structures (`Task`, `Css`, `Cgroup`, ...).
//! - [`tracepoint`]: typed views of the classic tracepoints' records.
//! - [`maps`]: the maps and globals shared with the daemon.
//! - [`record`]: building and submitting records.
//! - [`probes`]: one module per hook.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core offers no atomic read-modify-write; the
// intrinsic's add, its result unused, is the BPF atomic add every kernel supports.
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "core_intrinsics, for atomic_xadd (see above)")]

mod kernel;
mod maps;
mod probes;
mod record;
mod tracepoint;

/// The license the kernel reads from the object's `license` section: GPL-compatible, which
/// the kernel requires of programs that call its GPL-only helpers (`bpf_probe_read_kernel`
/// and the tracing helpers), and MIT for everything else, as the crate's license says.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
