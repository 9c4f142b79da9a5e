//! Typed views of the classic tracepoints' records: one struct per tracepoint, one method per
//! field, at the offsets the daemon read from tracefs (`events/<category>/<name>/format`).
//! A method returns `None` when the field is absent from this kernel's record or unreadable.
//!
//! The methods of [`MarkVictimTp`], [`ExitTp`], [`MkdirTp`] and [`SignalTp`] are generated
//! from the offsets table's `tracepoints` rows (`observer_common::kernel_offsets!`);
//! [`AttachTp`]'s offsets come in their own global, [`ATTACH`].

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, programs::TracePointContext, EbpfContext,
};
use observer_common::{AttachLayout, ABSENT};

use crate::{kernel::layout, maps::ATTACH};

/// Reads a `T` at `off` in the tracepoint's record; `None` when the field is absent.
#[inline(always)]
fn read_field<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    if off == ABSENT {
        return None;
    }
    // SAFETY: `read_at` is a fault-handling probe read of the record at `off`, from the
    // record's own `format`; every `T` read here is a plain integer, valid for any bits.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// Copies the `__data_loc` string whose locator is at `off` into `out` (NUL terminated, cut
/// to fit); the bytes copied, without the NUL.
#[inline(always)]
fn read_data_loc<'b>(ctx: &TracePointContext, off: u32, out: &'b mut [u8]) -> Option<&'b [u8]> {
    // The locator's low half is the string's offset in the record, its high half its length.
    let loc: u32 = read_field(ctx, off)?;
    let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    // SAFETY: a fault-handling probe read of at most `out.len()` bytes into `out`, which it
    // borrows mutably for the call.
    unsafe { bpf_probe_read_kernel_str_bytes(src, out) }.ok()
}

/// One method per row of the offsets table's `tracepoints`.
macro_rules! tracepoint_accessors {
    (
        flags { $($flags:tt)* }
        derived { $($derived:tt)* }
        members { $($members:tt)* }
        tracepoints { $(
            $(#[$doc:meta])*
            $field:ident : $view:ident :: $method:ident =
                $category:ident / $event:ident . $name:ident => $kind:ident $arg:tt ;
        )* }
    ) => {
        $( tracepoint_accessor!($(#[$doc])* $field $view $method $kind $arg); )*
    };
}

/// The method of one row, by what the program reads there.
macro_rules! tracepoint_accessor {
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident read $t:ty) => {
        impl $view<'_> {
            $(#[$doc])*
            #[inline(always)]
            pub fn $method(&self) -> Option<$t> {
                read_field(self.0, layout!($field))
            }
        }
    };
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident data_loc str) => {
        impl $view<'_> {
            $(#[$doc])*
            /// Copied into `out`; the bytes copied, without the NUL.
            #[inline(always)]
            pub fn $method<'b>(&self, out: &'b mut [u8]) -> Option<&'b [u8]> {
                read_data_loc(self.0, layout!($field), out)
            }
        }
    };
    // Not read by the program.
    ($(#[$doc:meta])* $field:ident $view:ident $method:ident manual $t:ty) => {};
}

observer_common::kernel_offsets!(tracepoint_accessors);

/// `oom/mark_victim`.
pub struct MarkVictimTp<'a>(pub &'a TracePointContext);

/// `sched/sched_process_exit`.
pub struct ExitTp<'a>(pub &'a TracePointContext);

/// `cgroup/cgroup_mkdir`.
pub struct MkdirTp<'a>(pub &'a TracePointContext);

/// `signal/signal_generate`.
pub struct SignalTp<'a>(pub &'a TracePointContext);

impl MkdirTp<'_> {
    /// Whether the record has the fields a report needs (its hierarchy, id and path).
    #[inline(always)]
    pub fn has_fields(&self) -> bool {
        layout!(tp_mkdir_root) != ABSENT
            && layout!(tp_mkdir_id) != ABSENT
            && layout!(tp_mkdir_path) != ABSENT
    }
}

/// `cgroup/cgroup_attach_task`, with its offsets from [`ATTACH`].
pub struct AttachTp<'a> {
    ctx: &'a TracePointContext,
    layout: AttachLayout,
}

impl<'a> AttachTp<'a> {
    /// The record of this run of the tracepoint.
    #[inline(always)]
    pub fn new(ctx: &'a TracePointContext) -> Self {
        // SAFETY: a reference to a static is valid and aligned; volatile so that the
        // loader's value is not folded away.
        let layout = unsafe { core::ptr::read_volatile(&ATTACH) };
        AttachTp { ctx, layout }
    }

    /// Whether the record has the fields a report needs (its hierarchy, cgroup and process).
    #[inline(always)]
    pub fn has_fields(&self) -> bool {
        let l = &self.layout;
        l.tp_root != ABSENT && l.tp_id != ABSENT && l.tp_pid != ABSENT
    }

    /// The hierarchy the program reports moves into (the memory controller's); [`ABSENT`]
    /// when the daemon found none.
    #[inline(always)]
    pub fn memory_root(&self) -> u32 {
        self.layout.memory_root
    }

    /// `dst_root`: the destination's hierarchy id.
    #[inline(always)]
    pub fn root(&self) -> Option<i32> {
        read_field(self.ctx, self.layout.tp_root)
    }

    /// `dst_id`: the destination cgroup's id.
    #[inline(always)]
    pub fn id(&self) -> Option<u64> {
        read_field(self.ctx, self.layout.tp_id)
    }

    /// `pid`: the moved process.
    #[inline(always)]
    pub fn pid(&self) -> Option<i32> {
        read_field(self.ctx, self.layout.tp_pid)
    }

    /// `dst_level`: the destination's depth.
    #[inline(always)]
    pub fn level(&self) -> Option<i32> {
        read_field(self.ctx, self.layout.tp_level)
    }
}
