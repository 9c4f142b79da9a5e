//! The BTF source chosen for a run, and the type and member lookups on it.

use std::{
    cell::RefCell,
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use btf_rs::{Backend, Btf, Type};

use crate::kernel::error::KernelError;

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
}

/// A BTF type database with the member lookups the layout needs.
///
/// The file is mapped, not parsed: a type is decoded when it is looked up. Parsed whole
/// (btf_rs's cached backend, or aya's parser) a kernel's 5 MiB of BTF took about 40 MiB of
/// heap and most of the start-up; mapped, it costs its own size and an index of type offsets.
pub struct KernelBtf {
    pub(super) btf: Btf,
    /// Type ids by name, as looked up so far: the mapped backend finds a name by a pass over
    /// every type, and the layout asks for most structure names more than once.
    names: RefCell<HashMap<String, Vec<u32>>>,
}

impl KernelBtf {
    /// Maps a BTF file and indexes its types.
    pub fn open(path: &Path) -> Result<Self, KernelError> {
        let btf = map(path).map_err(|e| KernelError::Btf {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(KernelBtf {
            btf,
            names: RefCell::default(),
        })
    }

    /// The ids of the types named `name`, in id order.
    pub fn ids_by_name(&self, name: &str) -> Vec<u32> {
        if let Some(ids) = self.names.borrow().get(name) {
            return ids.clone();
        }
        let ids = self.btf.resolve_ids_by_name(name).unwrap_or_default();
        self.names
            .borrow_mut()
            .insert(name.to_string(), ids.clone());
        ids
    }

    /// The types named `name`, in id order.
    pub(super) fn types_by_name(&self, name: &str) -> Vec<Type> {
        self.ids_by_name(name)
            .into_iter()
            .filter_map(|id| self.btf.resolve_type_by_id(id).ok())
            .collect()
    }

    pub(super) fn named_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.types_by_name(name).into_iter().find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
    }

    /// Byte offset of `field` in `struct name`, looking through anonymous unions and structs.
    pub fn offset(&self, name: &str, field: &str) -> Option<u32> {
        let s = self.named_struct(name)?;
        self.find_member(&s, field, 0)
    }

    pub(super) fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
    ) -> Option<u32> {
        self.find(s, field, base_bits, &|bits, _| {
            bits.is_multiple_of(8).then_some(bits / 8)
        })
    }

    /// Searches `s` and the anonymous unions and structs in it for `field`; `found` turns
    /// the member and its bit offset into the answer (the first member of that name decides).
    pub(super) fn find<T>(
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
        let types = self.types_by_name(enum_name);
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
    pub(super) fn tracepoint_proto(&self, tp: &str) -> Option<btf_rs::FuncProto> {
        let td = self
            .types_by_name(&format!("btf_trace_{tp}"))
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
        self.types_by_name(name)
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }
}

impl KernelBtf {
    /// `field` of `struct name`: its byte offset and its type (typedefs, const and volatile
    /// looked through), looking through anonymous unions and structs.
    pub fn member(&self, name: &str, field: &str) -> Option<(u32, Type)> {
        let s = self.named_struct(name)?;
        self.find_member_typed(&s, field, 0)
    }

    pub(super) fn find_member_typed(
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
    pub(super) fn strip(&self, mut t: Type) -> Option<Type> {
        loop {
            t = match t {
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x).ok()?,
                Type::Const(ref x) | Type::Volatile(ref x) => {
                    self.btf.resolve_chained_type(x).ok()?
                }
                Type::Restrict(ref x) => self.btf.resolve_chained_type(x).ok()?,
                Type::TypeTag(ref x) => self.btf.resolve_chained_type(x).ok()?,
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
}

/// Maps a BTF file. The kernel's own file can be mapped since Linux 6.16; before, and for
/// any file that cannot be, its bytes are copied into an anonymous memory file, mapped the
/// same way (the copy goes away with the mapping).
fn map(path: &Path) -> Result<Btf, btf_rs::Error> {
    match Btf::from_file_with_backend(path, Backend::Mmap) {
        Ok(btf) => Ok(btf),
        Err(_) => map_copy(path),
    }
}

/// [`map`]'s way for a file that cannot be mapped.
fn map_copy(path: &Path) -> Result<Btf, btf_rs::Error> {
    let copy = nix::sys::memfd::memfd_create(
        c"oom-observer-btf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut copy = File::from(copy);
    std::io::copy(&mut File::open(path)?, &mut copy)?;
    Btf::from_file_with_backend(format!("/proc/self/fd/{}", copy.as_raw_fd()), Backend::Mmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernels before 6.16 cannot map their BTF file: the copy must read the same.
    #[test]
    fn the_copied_btf_reads_as_the_mapped_one() {
        if !Path::new(SYS_BTF).exists() {
            eprintln!("NOTE: {SYS_BTF} is missing on this machine; nothing to copy");
            return;
        }
        let copied = map_copy(Path::new(SYS_BTF)).expect("the copy maps");
        let direct = map(Path::new(SYS_BTF)).expect("the file maps");
        let ids = |b: &Btf| b.resolve_ids_by_name("task_struct").unwrap_or_default();
        assert!(!ids(&copied).is_empty());
        assert_eq!(ids(&copied), ids(&direct));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(KernelBtf::open(Path::new("/nonexistent/vmlinux")).is_err());
    }
}
