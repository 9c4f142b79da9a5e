//! The pipeline's middle: the [`processor`] turns kernel records into [`crate::event`]s,
//! hands each kill's TaskOOM to containerd first, then gives the event to the sinks, in
//! kernel order.

pub mod processor;
