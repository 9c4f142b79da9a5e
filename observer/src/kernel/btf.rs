//! Computes [`observer_common::KernelLayout`], the struct offsets the kernel programs read,
//! from the running kernel's BTF (or a BTF file), and the classic tracepoints' record offsets
//! from tracefs.
//!
//! This is the CO-RE step: the same object file gets each kernel's own offsets at load time.
//! - [`source`]: the BTF source and the type lookups;
//! - [`resolve`]: one row of the offsets table, its member found and its width checked;
//! - [`layout`]: the whole layout, the table's rows and the values computed by hand.

mod layout;
mod resolve;
mod source;
#[cfg(test)]
mod tests;

pub use layout::{attach, build};
pub use resolve::Unresolved;
pub use source::{BtfSource, KernelBtf, SYS_BTF};
