//! The kernel side, seen from user space: BTF offsets for the programs ([`btf`]), tracefs,
//! what loading needs ([`setup`]), the hook strategies ([`strategy`]), loading them
//! ([`hooks`], [`attach`]), the maps the daemon reads ([`maps`]), the records they carry
//! ([`record`]), pinning ([`pins`]) and the kernel's clock ([`clock`]). It fails with its own
//! [`error::KernelError`], and returns kernel-side types only: the layers above convert.

pub mod attach;
pub mod btf;
pub mod clock;
pub mod error;
pub mod hooks;
pub mod maps;
pub mod pins;
pub mod record;
pub mod setup;
pub mod strategy;
pub mod tracefs;
