//! The BTF source chosen for a run, and the type and member lookups on it.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};

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
    pub(super) btf: Btf,
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

    pub(super) fn named_struct(&self, name: &str) -> Option<btf_rs::Struct> {
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
    pub(super) fn tracepoint_proto(&self, tp: &str) -> Option<btf_rs::FuncProto> {
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
