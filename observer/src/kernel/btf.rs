//! Computes [`observer_common::KernelLayout`], the struct offsets the kernel programs read,
//! from the running kernel's BTF (or a BTF file), and the classic tracepoints' record offsets
//! from tracefs.
//!
//! This is the CO-RE step: the same object file gets each kernel's own offsets at load time.
//! - [`source`]: the BTF source and the type lookups;
//! - [`resolve`]: one row of the offsets table, its member found and its width checked;
//! - [`layout`]: the whole layout, the table's rows and the values computed by hand;
//! - [`loader`]: the few types aya's loader needs, taken from the same mapped BTF.

mod layout;
mod loader;
mod resolve;
mod source;
#[cfg(test)]
mod tests;

pub use layout::{attach, build};
pub use loader::{
    loader_btf, ATTACH_FUNCTIONS, ATTACH_TRACEPOINTS, MARK_VICTIM, OOM_KILL_PROCESS,
    SCHED_PROCESS_EXIT, SIGNAL_GENERATE,
};
pub use resolve::Unresolved;
pub use source::{BtfSource, KernelBtf, SYS_BTF};
