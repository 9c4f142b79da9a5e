//! The kernel side, seen from user space: BTF offsets for the programs ([`btf`]), tracefs,
//! what loading needs ([`setup`]), the hook strategies ([`hooks`]), the maps the daemon reads
//! ([`maps`]), the records they carry ([`record`]) and the kernel's clock ([`clock`]).

pub mod btf;
pub mod clock;
pub mod hooks;
pub mod maps;
pub mod pins;
pub mod record;
pub mod setup;
pub mod tracefs;
