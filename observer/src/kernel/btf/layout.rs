//! The whole [`KernelLayout`]: every row of the offsets table resolved (BTF members, tracefs
//! record fields), and the few values no single member gives (enumerators, the architecture's
//! argument register, sums and strides).

use std::{collections::HashMap, path::Path};

use btf_rs::Type;
use observer_common::{AttachLayout, KernelLayout, Member, Read, ABSENT};

use super::{resolve::Unresolved, source::KernelBtf};
use crate::{host::cgroupfs::CgroupMounts, kernel::tracefs};

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
        for m in KernelLayout::MEMBERS {
            apply(b, &mut l, m);
        }
        l.memory_cgrp_id = b
            .enum_value("cgroup_subsys_id", "memory_cgrp_id")
            .unwrap_or(ABSENT);
        l.tp_btf_victim_is_task = b
            .tracepoint_first_arg_is_pointer("mark_victim")
            .unwrap_or(false) as u32;
        // (task, group_dead) since Linux 6.16; (task) before.
        l.tp_btf_exit_has_group_dead =
            (b.tracepoint_arg_count("sched_process_exit").unwrap_or(0) >= 2) as u32;
        l.kprobe_arg0 = kprobe_arg0(b).unwrap_or(ABSENT);
        kill_detail(b, &mut l);
        l.have_btf = 1;
    }
    if let Some(t) = tracefs {
        // One `format` read per tracepoint, however many of its fields the table names.
        let mut formats: HashMap<(&str, &str), Option<HashMap<String, u32>>> = HashMap::new();
        for f in KernelLayout::TRACEPOINT_FIELDS {
            let format = formats
                .entry((f.category, f.event))
                .or_insert_with(|| tracefs::field_offsets(t, f.category, f.event));
            if let Some(off) = format.as_ref().and_then(|fields| fields.get(f.name)) {
                *(f.slot)(&mut l) = *off;
            }
        }
    }
    l
}

/// Sets one row's field: its offset, or [`ABSENT`] (the program then does not read it) when
/// the member is missing or is not as wide as the program's read.
pub(super) fn apply(b: &KernelBtf, l: &mut KernelLayout, m: &Member) {
    *(m.slot)(l) = match b.resolve(m) {
        Ok(off) => off,
        Err(Unresolved::Missing) => ABSENT,
        Err(why) => {
            tracing::warn!(
                field = m.field,
                kernel_struct = m.strukt,
                problem = ?why,
                "kernel member does not match the program's read: it is not read"
            );
            ABSENT
        }
    };
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

/// The register of a kprobe'd function's first argument in `struct pt_regs` (`unsigned long
/// di` on x86_64, `u64 regs[31]` on arm64), read as a `u64`.
const KPROBE_ARG0: Member = Member {
    field: "kprobe_arg0",
    strukt: "pt_regs",
    path: if cfg!(target_arch = "x86_64") {
        &[&["di"]]
    } else {
        &[&["regs"]]
    },
    read: if cfg!(target_arch = "x86_64") {
        Read::Value(8)
    } else {
        Read::Element(8)
    },
    slot: |l| &mut l.kprobe_arg0,
};

/// Where a kprobe finds the probed function's first argument in `struct pt_regs`. The daemon
/// runs natively, so the kernel's calling convention is the one this binary was built for;
/// the offset itself comes from the kernel's BTF.
pub(super) fn kprobe_arg0(b: &KernelBtf) -> Option<u32> {
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        // arm64: `regs[31]` in an anonymous struct inside an anonymous union; x0 is regs[0].
        b.resolve(&KPROBE_ARG0).ok()
    } else {
        None
    }
}

/// Offsets for the kill's detail no single member gives: the stride of `pid.numbers[]` and
/// the victim's memory counters. Each one is ABSENT where this kernel lacks it.
fn kill_detail(b: &KernelBtf, l: &mut KernelLayout) {
    l.upid_size = b.struct_size("upid").unwrap_or(ABSENT);
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

/// The programs read each `rss_stat` counter as an `i64`.
const RSS_COUNTER_BYTES: u32 = 8;

impl KernelBtf {
    /// Offset in `mm_struct` of each `rss_stat` counter, in the order of `MM_*` indices given:
    /// `atomic_long_t rss_stat.count[i]` before Linux 6.2, the `.count` of
    /// `struct percpu_counter rss_stat[i]` since. Absent where the counter is not 8 bytes.
    pub(super) fn rss_counter_offsets(&self, idx: &[Option<u32>]) -> Vec<u32> {
        let absent = || vec![ABSENT; idx.len()];
        let Some((base, t)) = self.member("mm_struct", "rss_stat") else {
            return absent();
        };
        let (base, stride, count_off) = match t {
            // 5.x: struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }
            Type::Struct(s) => match self.find_member_typed(&s, "count", 0) {
                Some((off, t @ Type::Array(_))) => {
                    if self
                        .check_width(&t, Read::Element(RSS_COUNTER_BYTES))
                        .is_err()
                    {
                        return absent();
                    }
                    (base + off, 8, 0)
                }
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
                let Some((count_off, count)) = self.find_member_typed(&pc, "count", 0) else {
                    return absent();
                };
                if self
                    .check_width(&count, Read::Value(RSS_COUNTER_BYTES))
                    .is_err()
                {
                    return absent();
                }
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
