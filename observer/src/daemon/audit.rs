//! The daemon's fourth step: the limit audit, with containerd and a memory hierarchy.

use tokio::sync::mpsc::UnboundedReceiver;

use super::containerd::ContainerdLink;
use crate::{
    audit::{driver::AuditDriver, memory_fs::MemoryFs, worker::Observation},
    host::cgroupfs::CgroupMounts,
};

/// The audit: its driver (in the processor, which sees the migrations) and the
/// observations its worker sends back.
pub struct Audit {
    /// Decides what to observe and turns observations into findings.
    pub driver: AuditDriver,
    /// The worker's observations, for [`AuditDriver::apply`].
    pub observations: UnboundedReceiver<Observation>,
}

/// Starts the audit's worker; none without containerd or a memory hierarchy.
pub fn start(containerd: Option<&ContainerdLink>, cgroups: &CgroupMounts) -> Option<Audit> {
    let cd = containerd?;
    let mem = MemoryFs::from_mounts(cgroups)?;
    let (driver, observations) = AuditDriver::start(cd.index.clone(), mem);
    Some(Audit {
        driver,
        observations,
    })
}
