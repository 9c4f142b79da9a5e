//! oom-observer: sees every OOM kill in the kernel, names its container, and reports it in
//! order.
//!
//! Data flows one way, and the folders follow it:
//!
//! 1. [`kernel`]: the kernel programs are loaded and attached ([`kernel::hooks`], with
//!    offsets from the running kernel's BTF in [`kernel::btf`]); ring-buffer items become
//!    typed [`kernel::record`]s.
//! 2. [`host`]: what the host says about them: cgroup mounts, id → path, `/proc`.
//! 3. [`enrich`]: which container a kill belongs to, from containerd.
//! 4. [`pipeline`]: the [`pipeline::processor`] builds each [`pipeline::event`] and hands it
//!    to the sinks in kernel order.
//! 5. [`sinks`]: TaskOOM to containerd (spooled while it is away), then the JSON line.
//!
//! Beside the stream: [`audit`] (declared vs enforced memory limits, findings into the same
//! stream) and [`query`] (the "was it OOM-killed?" socket). [`daemon`] wires it all and runs
//! the loop; [`cli`] holds the one-shot commands.

pub mod audit;
pub mod cause;
pub mod cli;
pub mod daemon;
pub mod enrich;
pub mod error;
pub mod host;
pub mod kernel;
pub mod pipeline;
pub mod query;
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
