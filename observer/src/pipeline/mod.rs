//! The pipeline's middle: the [`processor`] turns kernel records into [`event`]s,
//! hands each kill's TaskOOM to containerd first, then gives the event to the sinks, in
//! kernel order.

pub mod processor;

/// The schema's old home, for callers not yet moved to [`crate::event`].
pub use crate::event;
