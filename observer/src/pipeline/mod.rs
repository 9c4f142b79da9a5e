//! The pipeline's middle: kernel records become schema-1 [`event`]s, and the [`processor`]
//! enriches them and hands them to the sinks, in kernel order.

pub mod event;
pub mod processor;
