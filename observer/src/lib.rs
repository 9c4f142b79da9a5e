//! oom-observer: sees every OOM kill in the kernel, names its container, and reports it in
//! order.
//!
//! Data flows one way, and the folders follow it (each imports only those above it here):
//!
//! 1. `cause`: an error's chain of causes, in words; [`scrub`]: command lines without their
//!    secrets.
//! 2. [`host`]: what the host says: cgroup mounts, id → path, `/proc`.
//! 3. [`kernel`]: the kernel programs are loaded and attached ([`kernel::hooks`], with
//!    offsets from the running kernel's BTF in [`kernel::btf`]); ring-buffer items become
//!    typed [`kernel::record`]s.
//! 4. [`enrich`]: which container a kill belongs to, from containerd.
//! 5. [`event`]: the event schema a record becomes, and why the kill happened.
//! 6. [`audit`]: declared vs enforced memory limits, findings into the same stream;
//!    [`forecast`]: the memory model that warns before a kill (`oom_risk`).
//! 7. [`query`]: the "was it OOM-killed?" history and socket.
//! 8. [`sinks`]: where events go, each behind one [`sinks::Sink`] trait (the JSON line,
//!    metrics, Kubernetes Events), and TaskOOM to containerd with its spool.
//! 9. [`pipeline`]: the [`pipeline::processor`] sequences the events: TaskOOM first, then
//!    the sinks, in kernel order.
//!
//! Then [`error`] (the daemon's error and its exit codes), [`daemon`] (wires it all and runs
//! the loop) and [`cli`] (the one-shot commands).

pub mod audit;
pub mod cause;
pub mod cli;
pub mod daemon;
pub mod enrich;
pub mod error;
pub mod event;
pub mod forecast;
pub mod host;
pub mod kernel;
pub mod pipeline;
pub mod query;
pub mod scrub;
pub mod sinks;

/// The kernel programs, embedded at build time (empty when built without them).
/// Aligned to 8 bytes, as an ELF64 object must be for aya to parse it in place.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer.bpf.o"));

#[cfg(all(test, not(ebpf_object_missing)))]
mod tests {
    /// The names the daemon looks maps and programs up by are the kernel side's.
    #[test]
    fn the_object_has_every_map_and_program_the_daemon_names() {
        assert_eq!(
            super::EBPF_OBJECT.as_ptr() as usize % 8,
            0,
            "ELF64 wants 8-byte alignment"
        );
        let obj = aya_obj::Object::parse(super::EBPF_OBJECT).expect("the embedded object parses");
        for m in observer_common::map::ALL {
            assert!(obj.maps.contains_key(*m), "map {m} missing from the object");
        }
        for p in observer_common::program::ALL {
            assert!(
                obj.programs.contains_key(*p),
                "program {p} missing from the object"
            );
        }
    }
}
