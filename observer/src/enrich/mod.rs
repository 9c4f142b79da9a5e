//! Enrichment: which container a kill belongs to, from containerd's view of the node.
//!
//! [`containerd`] is the API client, [`upkeep`] keeps the [`index`] of [`container`]s current
//! from containerd's event stream, and [`attribute`] applies the attribution rules. [`cri`]
//! reads a container's end as the kubelet will.

pub mod attribute;
pub mod container;
pub mod containerd;
pub mod cri;
pub mod index;
pub mod upkeep;
