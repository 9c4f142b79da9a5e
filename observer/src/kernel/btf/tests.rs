//! The resolver against this machine's own kernel BTF: real data, not a fixture.

use std::path::Path;

use observer_common::{KernelLayout, Member, Read, ABSENT};

use super::{
    layout::{apply, build, kprobe_arg0},
    KernelBtf, Unresolved, SYS_BTF,
};
use crate::host::cgroupfs::CgroupMounts;

/// The kernel's BTF, or `None` (with a note) on a machine without it.
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

#[test]
fn every_table_row_resolves_with_its_width() {
    let Some(b) = kernel() else { return };
    for m in KernelLayout::MEMBERS {
        assert!(
            b.resolve(m).is_ok(),
            "{}: {}.{:?} gives {:?}",
            m.field,
            m.strukt,
            m.path,
            b.resolve(m)
        );
    }
    let l = build(Some(&b), None, &CgroupMounts::default());
    for m in KernelLayout::MEMBERS {
        let mut copy = l;
        assert_ne!(*(m.slot)(&mut copy), ABSENT, "{} absent", m.field);
    }
    // The values no single member gives.
    assert_ne!(l.memory_cgrp_id, ABSENT);
    assert_ne!(l.kprobe_arg0, ABSENT);
    assert_ne!(l.upid_size, ABSENT);
    for rss in [l.mm_file_rss, l.mm_anon_rss, l.mm_swap_ents, l.mm_shmem_rss] {
        assert_ne!(rss, ABSENT);
    }
    // A path into an array's first element: `pid.numbers[0].nr`.
    assert_eq!(
        Some(l.pid_numbers_nr),
        b.offset("pid", "numbers")
            .zip(b.offset("upid", "nr"))
            .map(|(n, nr)| n + nr)
    );
    // A one-step row is where the plain member lookup finds it.
    for m in KernelLayout::MEMBERS.iter().filter(|m| m.path.len() == 1) {
        assert_eq!(
            b.resolve(m).ok(),
            b.offset(m.strukt, m.path[0][0]),
            "{}",
            m.field
        );
    }
}

#[test]
fn a_member_narrower_or_wider_than_the_read_is_absent() {
    let Some(b) = kernel() else { return };
    // `task_struct.pid` is a 4-byte pid_t: an 8-byte read of it would take the tgid too.
    let wide = Member {
        field: "task_pid",
        strukt: "task_struct",
        path: &[&["pid"]],
        read: Read::Value(8),
        slot: |l| &mut l.task_pid,
    };
    assert_eq!(
        b.resolve(&wide),
        Err(Unresolved::Width { member: 4, read: 8 })
    );
    let mut l = KernelLayout::unknown();
    l.task_pid = 0;
    apply(&b, &mut l, &wide);
    assert_eq!(l.task_pid, ABSENT);
    // An element read of something that is not an array.
    let not_array = Member {
        read: Read::Element(8),
        ..wide
    };
    assert_eq!(
        b.resolve(&not_array),
        Err(Unresolved::Width { member: 0, read: 8 })
    );
    // The right width resolves, and a missing member is absent without a mismatch.
    let right = Member {
        read: Read::Value(4),
        ..wide
    };
    assert_eq!(b.resolve(&right).ok(), b.offset("task_struct", "pid"));
    let missing = Member {
        path: &[&["no_such_field"]],
        ..wide
    };
    assert_eq!(b.resolve(&missing), Err(Unresolved::Missing));
}

#[test]
fn a_renamed_member_resolves_under_either_name() {
    let Some(b) = kernel() else { return };
    // `kernfs_node.parent` became `__parent` in Linux 6.15: one of the two is here.
    let parent = |path: &'static [&'static [&'static str]]| Member {
        field: "kn_parent",
        strukt: "kernfs_node",
        path,
        read: Read::Value(8),
        slot: |l| &mut l.kn_id,
    };
    let either = b.resolve(&parent(&[&["parent", "__parent"]]));
    assert!(either.is_ok(), "{either:?}");
    assert_eq!(either, b.resolve(&parent(&[&["__parent", "parent"]])));
    assert_eq!(
        either.ok(),
        b.offset("kernfs_node", "parent")
            .or(b.offset("kernfs_node", "__parent"))
    );
    assert_eq!(
        b.resolve(&parent(&[&["no_such_parent"]])),
        Err(Unresolved::Missing)
    );
    // A path through an embedded structure: `mem_cgroup.css.cgroup`.
    let css_cgroup = Member {
        field: "css_cgroup",
        strukt: "mem_cgroup",
        path: &[&["css"], &["cgroup"]],
        read: Read::Value(8),
        slot: |l| &mut l.css_cgroup,
    };
    assert_eq!(
        b.resolve(&css_cgroup).ok(),
        b.offset("mem_cgroup", "css")
            .zip(b.offset("cgroup_subsys_state", "cgroup"))
            .map(|(a, c)| a + c)
    );
}

#[test]
fn the_table_names_each_field_once() {
    let mut names: Vec<&str> = KernelLayout::MEMBERS
        .iter()
        .map(|m| m.field)
        .chain(KernelLayout::TRACEPOINT_FIELDS.iter().map(|f| f.field))
        .collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all);
    // Each row's slot is its own field.
    for m in KernelLayout::MEMBERS {
        let mut l = KernelLayout::unknown();
        *(m.slot)(&mut l) = 7;
        assert!(
            format!("{l:?}").contains(&format!("{}: 7", m.field)),
            "{}",
            m.field
        );
    }
    for f in KernelLayout::TRACEPOINT_FIELDS {
        let mut l = KernelLayout::unknown();
        *(f.slot)(&mut l) = 7;
        assert!(
            format!("{l:?}").contains(&format!("{}: 7", f.field)),
            "{}",
            f.field
        );
    }
}

#[test]
fn every_tracepoint_field_resolves_with_its_width() {
    let Some(t) = crate::kernel::tracefs::find() else {
        eprintln!("NOTE: tracefs is not mounted here; the tracepoint rows have nothing to read");
        return;
    };
    let l = build(None, Some(&t), &CgroupMounts::default());
    for f in KernelLayout::TRACEPOINT_FIELDS {
        let mut copy = l;
        assert_ne!(*(f.slot)(&mut copy), ABSENT, "{} absent", f.field);
        // The daemon takes only offsets from tracefs; the record's `size:` says the read fits.
        let format = std::fs::read_to_string(
            t.join("events")
                .join(f.category)
                .join(f.event)
                .join("format"),
        )
        .expect("the tracepoint's format reads");
        let size = format
            .lines()
            .filter_map(|line| line.trim().strip_prefix("field:"))
            .find_map(|rest| {
                let mut parts = rest.split(';').map(str::trim);
                let decl = parts.next()?;
                let name = decl.split_whitespace().last()?.split('[').next()?;
                (name == f.name)
                    .then(|| parts.find_map(|p| p.strip_prefix("size:")))
                    .flatten()
                    .and_then(|s| s.parse::<u32>().ok())
            });
        assert_eq!(size.map(Read::Value), Some(f.read), "{}", f.field);
    }
}
