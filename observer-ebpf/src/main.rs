//! oom-observer's kernel programs.
//!
//! Every kernel structure is read at an offset the daemon computed from the running
//! kernel's BTF and stored in [`maps::LAYOUT`] before loading; no offset is compiled in, so
//! this one object serves every kernel (CO-RE by load-time offsets). A field whose offset is
//! unknown is reported as not seen, never guessed.
//!
//! - [`kernel`]: typed views of the kernel structures (`Task`, `Css`, `Cgroup`, ...).
//! - [`maps`]: the maps and globals shared with the daemon.
//! - [`record`]: building and submitting records.
//! - [`probes`]: one module per hook.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod probes;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
