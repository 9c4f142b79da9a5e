//! Computes [`KernelLayout`], the struct offsets the kernel programs read, from the running
//! kernel's BTF (or a BTF file), and the classic tracepoints' record offsets from tracefs.
//!
//! This is the CO-RE step: the same object file gets each kernel's own offsets at load time.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use observer_common::{AttachLayout, KernelLayout, ABSENT};

use super::{error::KernelError, tracefs};
use crate::host::cgroupfs::CgroupMounts;

/// Where the kernel publishes its own BTF.
pub const SYS_BTF: &str = "/sys/kernel/btf/vmlinux";

/// BTF source chosen for this run.
#[derive(Debug, Clone)]
pub enum BtfSource {
    /// The kernel's own, from [`SYS_BTF`].
    Kernel,
    /// A file named with `--btf`.
    File(PathBuf),
    /// None available: offset-based fields are reported as unknown.
    None,
}

impl BtfSource {
    /// Picks the BTF source: the named file (which must parse), else the kernel's if present.
    pub fn select(file: Option<&Path>) -> Self {
        match file {
            Some(p) => BtfSource::File(p.to_path_buf()),
            None if Path::new(SYS_BTF).exists() => BtfSource::Kernel,
            None => BtfSource::None,
        }
    }

    /// The file to read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            BtfSource::Kernel => Some(Path::new(SYS_BTF)),
            BtfSource::File(p) => Some(p),
            BtfSource::None => None,
        }
    }

    /// Parses it for aya (fentry/tp_btf need it to find their attach targets).
    pub fn aya_btf(&self) -> Result<Option<aya::Btf>, KernelError> {
        match self {
            BtfSource::Kernel => aya::Btf::from_sys_fs()
                .map(Some)
                .map_err(|e| KernelError::Btf {
                    path: SYS_BTF.into(),
                    source: Box::new(e),
                }),
            BtfSource::File(p) => aya::Btf::parse_file(p, aya::Endianness::default())
                .map(Some)
                .map_err(|e| KernelError::Btf {
                    path: p.clone(),
                    source: Box::new(e),
                }),
            BtfSource::None => Ok(None),
        }
    }
}

/// A BTF type database with the member lookups the layout needs.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Reads and parses a BTF file.
    pub fn open(path: &Path) -> Result<Self, KernelError> {
        let btf = Btf::from_file(path).map_err(|e| KernelError::Btf {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(KernelBtf { btf })
    }

    fn named_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.btf
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
    }

    /// Byte offset of `field` in `struct name`, looking through anonymous unions and structs.
    pub fn offset(&self, name: &str, field: &str) -> Option<u32> {
        let s = self.named_struct(name)?;
        self.find_member(&s, field, 0)
    }

    fn find_member(&self, s: &btf_rs::Struct, field: &str, base_bits: u32) -> Option<u32> {
        self.find(s, field, base_bits, &|bits, _| {
            bits.is_multiple_of(8).then_some(bits / 8)
        })
    }

    /// Searches `s` and the anonymous unions and structs in it for `field`; `found` turns
    /// the member and its bit offset into the answer (the first member of that name decides).
    fn find<T>(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
        found: &dyn Fn(u32, &btf_rs::Member) -> Option<T>,
    ) -> Option<T> {
        for m in &s.members {
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            let bits = base_bits + m.bit_offset();
            if member_name == field {
                return found(bits, m);
            }
            if member_name.is_empty() {
                let inner = self.btf.resolve_chained_type(m).ok()?;
                if let Type::Struct(inner) | Type::Union(inner) = inner {
                    if let Some(hit) = self.find(&inner, field, bits, found) {
                        return Some(hit);
                    }
                }
            }
        }
        None
    }

    /// Value of an enumerator of `enum enum_name` (for example `memory_cgrp_id` of
    /// `cgroup_subsys_id`, which depends on the kernel's config).
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Option<u32> {
        let types = self.btf.resolve_types_by_name(enum_name).ok()?;
        types.iter().find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| self.btf.resolve_name(*m).ok().as_deref() == Some(enumerator))
                .map(|m| m.val()),
            _ => None,
        })
    }

    /// The prototype of `btf_trace_<tp>` (its first parameter is the tracepoint's `void *`).
    fn tracepoint_proto(&self, tp: &str) -> Option<btf_rs::FuncProto> {
        let td = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{tp}"))
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Typedef(td) => Some(td),
                _ => None,
            })?;
        let ptr = self.btf.resolve_chained_type(&td).ok()?;
        let Type::Ptr(ptr) = ptr else { return None };
        match self.btf.resolve_chained_type(&ptr).ok()? {
            Type::FuncProto(proto) => Some(proto),
            _ => None,
        }
    }

    /// How many arguments a BTF tracepoint passes (not counting its `void *`).
    pub fn tracepoint_arg_count(&self, tp: &str) -> Option<usize> {
        self.tracepoint_proto(tp)
            .map(|p| p.parameters.len().saturating_sub(1))
    }

    /// Whether `btf_trace_<tp>`'s first real argument is a pointer (a `struct task_struct *`
    /// on Linux 6.8+ for `mark_victim`) rather than an integer pid.
    pub fn tracepoint_first_arg_is_pointer(&self, tp: &str) -> Option<bool> {
        let proto = self.tracepoint_proto(tp)?;
        // Parameter 0 is the tracepoint's `void *__data`.
        let arg = proto.parameters.get(1)?;
        let mut t = self.btf.resolve_chained_type(arg).ok()?;
        loop {
            t = match t {
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x).ok()?,
                Type::Const(ref x) | Type::Volatile(ref x) => {
                    self.btf.resolve_chained_type(x).ok()?
                }
                Type::Ptr(_) => return Some(true),
                _ => return Some(false),
            };
        }
    }

    /// Whether the kernel has a function of this name in its BTF (a traceable, non-inlined one).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .map(|ts| ts.iter().any(|t| matches!(t, Type::Func(_))))
            .unwrap_or(false)
    }
}

/// Builds the layout handed to the kernel programs. Without BTF only the classic
/// tracepoints' own record fields are known.
pub fn build(
    btf: Option<&KernelBtf>,
    tracefs: Option<&Path>,
    cgroups: &CgroupMounts,
) -> KernelLayout {
    let mut l = KernelLayout::unknown();
    l.memory_on_dfl = cgroups.memory_on_dfl() as u32;
    if let Some(b) = btf {
        let o = |s: &str, f: &str| b.offset(s, f).unwrap_or(ABSENT);
        l.oc_memcg = o("oom_control", "memcg");
        l.oc_chosen = o("oom_control", "chosen");
        l.oc_constraint = o("oom_control", "constraint");
        l.task_pid = o("task_struct", "pid");
        l.task_tgid = o("task_struct", "tgid");
        l.task_comm = o("task_struct", "comm");
        l.task_real_cred = o("task_struct", "real_cred");
        l.task_cgroups = o("task_struct", "cgroups");
        l.task_memcg_in_oom = o("task_struct", "memcg_in_oom");
        // kuid_t is `struct { uid_t val; }`: the uid is at the member's own offset.
        l.cred_uid = o("cred", "uid");
        l.css_set_dfl_cgrp = o("css_set", "dfl_cgrp");
        l.css_set_subsys = o("css_set", "subsys");
        l.css_cgroup = o("cgroup_subsys_state", "cgroup");
        l.css_parent = o("cgroup_subsys_state", "parent");
        l.memcg_css = o("mem_cgroup", "css");
        l.memcg_oom_lock = o("mem_cgroup", "oom_lock");
        l.cgroup_kn = o("cgroup", "kn");
        l.kn_id = o("kernfs_node", "id");
        l.memory_cgrp_id = b
            .enum_value("cgroup_subsys_id", "memory_cgrp_id")
            .unwrap_or(ABSENT);
        l.tp_btf_victim_is_task = b
            .tracepoint_first_arg_is_pointer("mark_victim")
            .unwrap_or(false) as u32;
        l.task_exit_code = o("task_struct", "exit_code");
        // (task, group_dead) since Linux 6.16; (task) before.
        l.tp_btf_exit_has_group_dead =
            (b.tracepoint_arg_count("sched_process_exit").unwrap_or(0) >= 2) as u32;
        l.kprobe_arg0 = kprobe_arg0(b).unwrap_or(ABSENT);
        kill_detail(b, &mut l);
        l.have_btf = 1;
    }
    if let Some(t) = tracefs {
        if let Some(f) = tracefs::field_offsets(t, "oom", "mark_victim") {
            l.tp_victim_pid = f.get("pid").copied().unwrap_or(ABSENT);
            l.tp_victim_comm = f.get("comm").copied().unwrap_or(ABSENT);
            l.tp_victim_uid = f.get("uid").copied().unwrap_or(ABSENT);
        }
        if let Some(f) = tracefs::field_offsets(t, "sched", "sched_process_exit") {
            l.tp_exit_pid = f.get("pid").copied().unwrap_or(ABSENT);
            l.tp_exit_group_dead = f.get("group_dead").copied().unwrap_or(ABSENT);
        }
        if let Some(f) = tracefs::field_offsets(t, "cgroup", "cgroup_mkdir") {
            l.tp_mkdir_root = f.get("root").copied().unwrap_or(ABSENT);
            l.tp_mkdir_id = f.get("id").copied().unwrap_or(ABSENT);
            l.tp_mkdir_level = f.get("level").copied().unwrap_or(ABSENT);
            l.tp_mkdir_path = f.get("path").copied().unwrap_or(ABSENT);
        }
    }
    l
}

/// Offsets of `cgroup/cgroup_attach_task`'s record and the memory hierarchy's id, for the
/// program that reports process migrations into memory cgroups. Unknown (the program then
/// reports nothing) without tracefs or without a memory hierarchy.
pub fn attach(tracefs: Option<&Path>, cgroups: &CgroupMounts) -> AttachLayout {
    let mut a = AttachLayout::unknown();
    let Some(mem) = cgroups.memory() else {
        return a;
    };
    let Some(f) = tracefs.and_then(|t| tracefs::field_offsets(t, "cgroup", "cgroup_attach_task"))
    else {
        return a;
    };
    a.tp_root = f.get("dst_root").copied().unwrap_or(ABSENT);
    a.tp_id = f.get("dst_id").copied().unwrap_or(ABSENT);
    a.tp_pid = f.get("pid").copied().unwrap_or(ABSENT);
    a.tp_level = f.get("dst_level").copied().unwrap_or(ABSENT);
    a.memory_root = mem.id;
    a
}

/// Where a kprobe finds the probed function's first argument in `struct pt_regs`. The daemon
/// runs natively, so the kernel's calling convention is the one this binary was built for;
/// the offset itself comes from the kernel's BTF.
fn kprobe_arg0(b: &KernelBtf) -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        b.offset("pt_regs", "di")
    } else if cfg!(target_arch = "aarch64") {
        // `regs[31]` in an anonymous struct inside an anonymous union; x0 is regs[0].
        b.offset("pt_regs", "regs")
    } else {
        None
    }
}

impl KernelBtf {
    /// `field` of `struct name`: its byte offset and its type (typedefs, const and volatile
    /// looked through), looking through anonymous unions and structs.
    pub fn member(&self, name: &str, field: &str) -> Option<(u32, Type)> {
        let s = self.named_struct(name)?;
        self.find_member_typed(&s, field, 0)
    }

    fn find_member_typed(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
    ) -> Option<(u32, Type)> {
        self.find(s, field, base_bits, &|bits, m| {
            if !bits.is_multiple_of(8) {
                return None;
            }
            Some((
                bits / 8,
                self.strip(self.btf.resolve_chained_type(m).ok()?)?,
            ))
        })
    }

    /// The type under typedefs and qualifiers.
    fn strip(&self, mut t: Type) -> Option<Type> {
        loop {
            t = match t {
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x).ok()?,
                Type::Const(ref x) | Type::Volatile(ref x) => {
                    self.btf.resolve_chained_type(x).ok()?
                }
                other => return Some(other),
            };
        }
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.named_struct(name).map(|s| s.size() as u32)
    }

    /// Values of the named enumerators, found in any enum (some, like `MM_ANONPAGES`, belong
    /// to an anonymous one); one pass over the types.
    pub fn enumerators(&self, names: &[&str]) -> Vec<Option<u32>> {
        let mut out = vec![None; names.len()];
        // Type ids are dense from 1: walk them until the first that does not resolve.
        let mut id = 1;
        while let Ok(t) = self.btf.resolve_type_by_id(id) {
            id += 1;
            if let Type::Enum(e) = &t {
                for m in &e.members {
                    let Ok(n) = self.btf.resolve_name(m) else {
                        continue;
                    };
                    if let Some(i) = names.iter().position(|x| *x == n) {
                        out[i] = Some(m.val());
                    }
                }
                if out.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        out
    }

    /// Offset in `mm_struct` of each `rss_stat` counter, in the order of `MM_*` indices given:
    /// `atomic_long_t rss_stat.count[i]` before Linux 6.2, the `.count` of
    /// `struct percpu_counter rss_stat[i]` since.
    fn rss_counter_offsets(&self, idx: &[Option<u32>]) -> Vec<u32> {
        let absent = || vec![ABSENT; idx.len()];
        let Some((base, t)) = self.member("mm_struct", "rss_stat") else {
            return absent();
        };
        let (base, stride, count_off) = match t {
            // 5.x: struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }
            Type::Struct(s) => match self.find_member_typed(&s, "count", 0) {
                Some((off, Type::Array(_))) => (base + off, 8, 0),
                _ => return absent(),
            },
            // 6.2+: struct percpu_counter rss_stat[NR_MM_COUNTERS]
            Type::Array(a) => {
                let Some(Type::Struct(pc)) = self
                    .btf
                    .resolve_chained_type(&a)
                    .ok()
                    .and_then(|t| self.strip(t))
                else {
                    return absent();
                };
                let Some((count_off, _)) = self.find_member_typed(&pc, "count", 0) else {
                    return absent();
                };
                (base, pc.size() as u32, count_off)
            }
            _ => return absent(),
        };
        idx.iter()
            .map(|i| match i {
                Some(i) if *i < 16 => base + i * stride + count_off,
                _ => ABSENT,
            })
            .collect()
    }
}

/// Offsets for the kill's detail: the OOM domain's page counters, the victim's memory
/// counters, badness and namespace pid. Each one is ABSENT where this kernel lacks it.
fn kill_detail(b: &KernelBtf, l: &mut KernelLayout) {
    let o = |s: &str, f: &str| b.offset(s, f).unwrap_or(ABSENT);
    l.oc_totalpages = o("oom_control", "totalpages");
    l.oc_chosen_points = o("oom_control", "chosen_points");
    l.memcg_memory = o("mem_cgroup", "memory");
    l.memcg_swap = o("mem_cgroup", "swap");
    l.page_counter_usage = o("page_counter", "usage");
    l.page_counter_max = o("page_counter", "max");
    l.task_mm = o("task_struct", "mm");
    l.task_signal = o("task_struct", "signal");
    l.signal_oom_score_adj = o("signal_struct", "oom_score_adj");
    // Whether the OOM killer's chosen victim is already exiting (the decision's doubt).
    l.task_flags = o("task_struct", "flags");
    l.signal_flags = o("signal_struct", "flags");
    l.task_group_leader = o("task_struct", "group_leader");
    l.task_thread_pid = o("task_struct", "thread_pid");
    l.pid_level = o("pid", "level");
    let numbers = o("pid", "numbers");
    let nr = o("upid", "nr");
    l.pid_numbers_nr = if numbers == ABSENT || nr == ABSENT {
        ABSENT
    } else {
        numbers + nr
    };
    l.upid_size = b.struct_size("upid").unwrap_or(ABSENT);
    l.mm_total_vm = o("mm_struct", "total_vm");
    l.mm_pgtables_bytes = o("mm_struct", "pgtables_bytes");
    let idx = b.enumerators(&[
        "MM_FILEPAGES",
        "MM_ANONPAGES",
        "MM_SWAPENTS",
        "MM_SHMEMPAGES",
    ]);
    let rss = b.rss_counter_offsets(&idx);
    (l.mm_file_rss, l.mm_anon_rss, l.mm_swap_ents, l.mm_shmem_rss) =
        (rss[0], rss[1], rss[2], rss[3]);
}

#[cfg(test)]
mod tests {
    use super::*;

    // These read the machine's own kernel BTF: real data, not a fixture.
    fn kernel() -> Option<KernelBtf> {
        if !Path::new(SYS_BTF).exists() {
            eprintln!(
                "NOTE: {SYS_BTF} is missing on this machine; BTF layout tests have nothing to read"
            );
            return None;
        }
        Some(KernelBtf::open(Path::new(SYS_BTF)).expect("kernel BTF parses"))
    }

    #[test]
    fn resolves_oom_path_offsets_from_kernel_btf() {
        let Some(b) = kernel() else { return };
        // css is the first member of mem_cgroup on every kernel since 3.x.
        assert_eq!(b.offset("mem_cgroup", "css"), Some(0));
        for (s, f) in [
            ("oom_control", "memcg"),
            ("oom_control", "chosen"),
            ("oom_control", "constraint"),
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("task_struct", "comm"),
            ("task_struct", "cgroups"),
            ("css_set", "dfl_cgrp"),
            ("css_set", "subsys"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
        ] {
            assert!(b.offset(s, f).is_some(), "{s}.{f} not found");
        }
        assert_ne!(
            b.offset("task_struct", "pid"),
            b.offset("task_struct", "tgid")
        );
        assert!(b.enum_value("cgroup_subsys_id", "memory_cgrp_id").is_some());
        // x86_64 pt_regs: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ...
        #[cfg(target_arch = "x86_64")]
        assert_eq!(kprobe_arg0(&b), Some(14 * 8));
        assert!(b.offset("task_struct", "no_such_field").is_none());
        assert!(b.has_function("oom_kill_process") || b.has_function("out_of_memory"));
        assert!(b.offset("task_struct", "exit_code").is_some());
        // sched_process_exit passes the task (and group_dead on 6.16+).
        assert!(matches!(
            b.tracepoint_arg_count("sched_process_exit"),
            Some(1) | Some(2)
        ));
    }

    #[test]
    fn finds_members_inside_anonymous_unions() {
        let Some(b) = kernel() else { return };
        // sk_buff opens with `union { struct { next; prev; ... }; struct rb_node rbnode; ... }`.
        assert_eq!(b.offset("sk_buff", "next"), Some(0));
        assert_eq!(b.offset("sk_buff", "rbnode"), Some(0));
        assert_eq!(b.offset("sk_buff", "prev"), Some(8));
    }

    #[test]
    fn unknown_layout_without_btf_or_tracefs() {
        let l = build(None, None, &CgroupMounts::default());
        assert_eq!(l.have_btf, 0);
        assert_eq!(l.task_pid, ABSENT);
        assert_eq!(l.tp_victim_pid, ABSENT);
    }
}
