//! The BTF handed to aya's loader, made from the kernel's BTF already mapped for the layout.
//!
//! aya reads a kernel BTF for two things: the type id of each function or tracepoint an
//! fentry, fexit or tp_btf program attaches to (found by name and kind), and the CO-RE
//! relocations of an object that has some. Ours has none (the offsets come from the layout;
//! a unit test checks the object), so the loader needs only those few ids. Parsed whole,
//! the kernel's BTF cost aya about 40 MiB of heap and a third of the start-up; this BTF
//! holds the attach targets at their kernel ids and a 12-byte placeholder at every other id.

use btf_rs::Type;

use super::source::KernelBtf;

/// The function the fentry and fexit programs attach to.
pub const OOM_KILL_PROCESS: &str = "oom_kill_process";
/// The tracepoints the tp_btf programs attach to.
pub const MARK_VICTIM: &str = "mark_victim";
/// See [`MARK_VICTIM`].
pub const SIGNAL_GENERATE: &str = "signal_generate";
/// See [`MARK_VICTIM`].
pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
/// Every kernel function a program attaches to by BTF.
pub const ATTACH_FUNCTIONS: &[&str] = &[OOM_KILL_PROCESS];
/// Every tracepoint a tp_btf program attaches to (aya looks up `btf_trace_<name>`).
pub const ATTACH_TRACEPOINTS: &[&str] = &[MARK_VICTIM, SIGNAL_GENERATE, SCHED_PROCESS_EXIT];

/// `BTF_KIND_PTR`: a placeholder that no lookup by name and kind can match.
const KIND_PTR: u32 = 2;
/// `BTF_KIND_TYPEDEF`, how a tracepoint's `btf_trace_<name>` is declared.
const KIND_TYPEDEF: u32 = 8;
/// `BTF_KIND_FUNC`.
const KIND_FUNC: u32 = 12;
/// `struct btf_header`'s size.
const HEADER_LEN: u32 = 24;
/// A `struct btf_type` without trailing data (PTR, TYPEDEF and FUNC have none).
const TYPE_LEN: u32 = 12;

/// One attach target found in the kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its type id in the kernel's BTF.
    pub id: u32,
    /// `BTF_KIND_FUNC` or `BTF_KIND_TYPEDEF`.
    kind: u32,
    /// The name aya looks up.
    pub name: String,
}

/// The attach targets this kernel has: for each name, the first type of the kind aya looks
/// for, as aya's own lookup would pick it.
pub fn targets(k: &KernelBtf) -> Vec<Target> {
    let functions = ATTACH_FUNCTIONS.iter().map(|f| (f.to_string(), KIND_FUNC));
    let tracepoints = ATTACH_TRACEPOINTS
        .iter()
        .map(|tp| (format!("btf_trace_{tp}"), KIND_TYPEDEF));
    let mut out: Vec<Target> = functions
        .chain(tracepoints)
        .filter_map(|(name, kind)| {
            let id = k.ids_by_name(&name).into_iter().find(|id| {
                matches!(
                    (kind, k.btf.resolve_type_by_id(*id)),
                    (KIND_FUNC, Ok(Type::Func(_))) | (KIND_TYPEDEF, Ok(Type::Typedef(_)))
                )
            })?;
            Some(Target { id, kind, name })
        })
        .collect();
    out.sort_by_key(|t| t.id);
    out
}

/// The raw BTF (native byte order) with `targets` at their ids and placeholders between.
pub fn encode(targets: &[Target]) -> Vec<u8> {
    let last = targets.iter().map(|t| t.id).max().unwrap_or(0);
    let mut strings = vec![0u8];
    let mut types = Vec::with_capacity(last as usize * TYPE_LEN as usize);
    let mut next = targets.iter().peekable();
    for id in 1..=last {
        let (name_off, info) = match next.next_if(|t| t.id == id) {
            Some(t) => {
                let off = strings.len() as u32;
                strings.extend_from_slice(t.name.as_bytes());
                strings.push(0);
                (off, t.kind << 24)
            }
            None => (0, KIND_PTR << 24),
        };
        for word in [name_off, info, 0] {
            types.extend_from_slice(&word.to_ne_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN as usize + types.len() + strings.len());
    out.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    out.extend_from_slice(&[1, 0]); // version 1, no flags
    for word in [
        HEADER_LEN,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&word.to_ne_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

/// The loader's BTF for this kernel.
pub fn loader_btf(k: &KernelBtf) -> Result<aya::Btf, aya::BtfError> {
    aya::Btf::parse(&encode(&targets(k)), aya::Endianness::default())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use aya_obj::btf::BtfKind;

    use super::*;
    use crate::kernel::btf::source::SYS_BTF;

    #[test]
    fn each_target_is_found_at_its_id_and_nothing_else_by_name() {
        let targets = [
            Target {
                id: 3,
                kind: KIND_FUNC,
                name: "oom_kill_process".into(),
            },
            Target {
                id: 7,
                kind: KIND_TYPEDEF,
                name: "btf_trace_mark_victim".into(),
            },
        ];
        let btf = aya::Btf::parse(&encode(&targets), aya::Endianness::default())
            .expect("the encoded BTF parses");
        assert_eq!(
            btf.id_by_type_name_kind("oom_kill_process", BtfKind::Func)
                .ok(),
            Some(3)
        );
        assert_eq!(
            btf.id_by_type_name_kind("btf_trace_mark_victim", BtfKind::Typedef)
                .ok(),
            Some(7)
        );
        // A name with the wrong kind, or absent, is not found: aya then refuses the
        // program as it would with the whole BTF.
        assert!(btf
            .id_by_type_name_kind("oom_kill_process", BtfKind::Typedef)
            .is_err());
        assert!(btf
            .id_by_type_name_kind("btf_trace_signal_generate", BtfKind::Typedef)
            .is_err());
    }

    #[test]
    fn no_targets_is_an_empty_btf() {
        let btf = aya::Btf::parse(&encode(&[]), aya::Endianness::default());
        assert!(btf.is_ok());
    }

    /// The point of the whole file: on this kernel, aya finds every attach target at the id
    /// its own parse of the whole BTF gives.
    #[test]
    fn the_kernel_ids_are_aya_s_own() {
        if !Path::new(SYS_BTF).exists() {
            eprintln!("NOTE: {SYS_BTF} is missing on this machine; nothing to compare");
            return;
        }
        let k = KernelBtf::open(Path::new(SYS_BTF)).expect("kernel BTF maps");
        let ours = loader_btf(&k).expect("the loader BTF parses");
        let whole = aya::Btf::from_sys_fs().expect("aya parses the kernel BTF");
        let names = ATTACH_FUNCTIONS
            .iter()
            .map(|f| (f.to_string(), BtfKind::Func))
            .chain(
                ATTACH_TRACEPOINTS
                    .iter()
                    .map(|tp| (format!("btf_trace_{tp}"), BtfKind::Typedef)),
            );
        let mut found = 0;
        for (name, kind) in names {
            let theirs = whole.id_by_type_name_kind(&name, kind).ok();
            assert_eq!(
                ours.id_by_type_name_kind(&name, kind).ok(),
                theirs,
                "{name}"
            );
            found += usize::from(theirs.is_some());
        }
        // mark_victim and sched_process_exit are in every kernel this runs on.
        assert!(found >= 2, "only {found} targets in this kernel's BTF");
    }

    /// aya reads more of the kernel's BTF only for an object with CO-RE relocations; this
    /// one has none, so the few attach targets are all it needs.
    #[cfg(not(ebpf_object_missing))]
    #[test]
    fn the_object_has_no_core_relocations() {
        let obj = aya_obj::Object::parse(crate::EBPF_OBJECT).expect("the embedded object parses");
        assert!(!obj.has_btf_relocations());
    }
}
