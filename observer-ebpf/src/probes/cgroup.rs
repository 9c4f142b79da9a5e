//! `cgroup/cgroup_mkdir` and `cgroup/cgroup_attach_task` (classic tracepoints): a new
//! cgroup's path, learnt before it can vanish, and processes moved into memory cgroups. Both
//! go to their own ring, [`CGROUP_EVENTS`], so that a flood of them cannot displace a kill.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
    EbpfContext,
};
use observer_common::{CgroupAttachRecord, CgroupMkdirRecord, RecordKind, ABSENT, CGROUP_PATH_LEN};

use crate::{
    kernel::layout,
    maps::{ATTACH, CGROUP_EVENTS},
    record::count_lost,
};

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir_tp(ctx: TracePointContext) -> u32 {
    let (root_off, id_off, level_off, path_off) = (
        layout!(tp_mkdir_root),
        layout!(tp_mkdir_id),
        layout!(tp_mkdir_level),
        layout!(tp_mkdir_path),
    );
    if root_off == ABSENT || id_off == ABSENT || path_off == ABSENT {
        return 0;
    }
    let Some(mut slot) = CGROUP_EVENTS.reserve::<CgroupMkdirRecord>(0) else {
        count_lost(RecordKind::CgroupMkdir);
        return 0;
    };
    let rec = slot.as_mut_ptr();
    unsafe {
        (*rec).kind = RecordKind::CgroupMkdir as u32;
        (*rec).root = ctx.read_at::<i32>(root_off as usize).unwrap_or(-1) as u32;
        (*rec).id = ctx.read_at::<u64>(id_off as usize).unwrap_or(0);
        (*rec).level = if level_off == ABSENT {
            0
        } else {
            ctx.read_at::<i32>(level_off as usize).unwrap_or(0) as u32
        };
        (*rec).path_len = 0;
        let loc = ctx.read_at::<u32>(path_off as usize).unwrap_or(0);
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        if let Ok(bytes) = bpf_probe_read_kernel_str_bytes(src, &mut (*rec).path) {
            // A path that filled the buffer may have been cut: say so.
            let n = bytes.len() as u32;
            (*rec).path_len = if n as usize >= CGROUP_PATH_LEN - 1 {
                CGROUP_PATH_LEN as u32
            } else {
                n
            };
        }
    }
    slot.submit(0);
    0
}

/// A process moved into a memory cgroup: the daemon re-audits its container's limit at once.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_tp(ctx: TracePointContext) -> u32 {
    let l = unsafe { core::ptr::read_volatile(&ATTACH) };
    if l.tp_root == ABSENT || l.tp_id == ABSENT || l.tp_pid == ABSENT {
        return 0;
    }
    let root = match unsafe { ctx.read_at::<i32>(l.tp_root as usize) } {
        Ok(r) => r as u32,
        Err(_) => return 0,
    };
    // Every v1 hierarchy sees its own migration; only the memory one matters.
    if root != l.memory_root {
        return 0;
    }
    let rec = CgroupAttachRecord {
        kind: RecordKind::CgroupAttach as u32,
        root,
        id: unsafe { ctx.read_at::<u64>(l.tp_id as usize) }.unwrap_or(0),
        pid: unsafe { ctx.read_at::<i32>(l.tp_pid as usize) }.unwrap_or(0) as u32,
        level: if l.tp_level == ABSENT {
            0
        } else {
            unsafe { ctx.read_at::<i32>(l.tp_level as usize) }.unwrap_or(0) as u32
        },
    };
    match CGROUP_EVENTS.reserve::<CgroupAttachRecord>(0) {
        Some(mut slot) => {
            slot.write(rec);
            slot.submit(0);
        }
        None => count_lost(RecordKind::CgroupAttach),
    }
    0
}
