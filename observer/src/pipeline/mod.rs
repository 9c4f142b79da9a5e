//! The pipeline's middle: kernel records become schema-1 [`event`]s, the [`processor`]
//! enriches them and hands them to the sinks in kernel order, and [`explain`] says why each
//! kill happened and what follows.

pub mod event;
pub mod explain;
pub mod processor;
