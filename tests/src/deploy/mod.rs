//! The deployment's harness (`tests/tests/deploy.rs`): the manifests of
//! `deploy/kubernetes/` read as JSON, the DaemonSet's container turned into `ctr` arguments
//! with the service account the kubelet would mount, and the image archive read the way
//! containerd reads it.

pub mod image;
pub mod manifest;
pub mod run;
