//! One row of the offsets table ([`Member`]) against the kernel's BTF: the member found by
//! its path (and the names it had in other kernels), and its width checked against the
//! program's read. A member that is not as wide as the read would be read wrong, so it is
//! reported as unresolved and the program does not read it at all.

use btf_rs::Type;
use observer_common::{Member, Read};

use super::source::KernelBtf;

/// Why a row of the table has no offset on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The structure, or a member on the path, is not in this kernel's BTF.
    Missing,
    /// The member is a bitfield, which no program reads.
    Bitfield,
    /// The member (or, for an element read, its array's element) is `member` bytes wide,
    /// and the program reads `read` bytes.
    Width {
        /// The member's size in this kernel, in bytes (0: not an array, for an element read).
        member: u32,
        /// The size the program reads.
        read: u32,
    },
}

impl KernelBtf {
    /// Byte offset of the row's member in its structure, once its width is checked.
    pub fn resolve(&self, m: &Member) -> Result<u32, Unresolved> {
        let mut s = self.named_struct(m.strukt).ok_or(Unresolved::Missing)?;
        let mut offset = 0;
        let mut steps = m.path.iter().peekable();
        while let Some(names) = steps.next() {
            let (off, member) = names
                .iter()
                .find_map(|n| self.find_raw(&s, n))
                .ok_or(Unresolved::Missing)?;
            if member.bitfield_size().is_some_and(|b| b != 0) {
                return Err(Unresolved::Bitfield);
            }
            offset += off;
            let t = self
                .btf
                .resolve_chained_type(&member)
                .ok()
                .and_then(|t| self.strip(t))
                .ok_or(Unresolved::Missing)?;
            if steps.peek().is_none() {
                self.check_width(&t, m.read)?;
                return Ok(offset);
            }
            // Further along the path: into an embedded structure, or an array's first element.
            s = match t {
                Type::Struct(inner) | Type::Union(inner) => inner,
                Type::Array(a) => match self.element(&a) {
                    Some(Type::Struct(inner)) | Some(Type::Union(inner)) => inner,
                    _ => return Err(Unresolved::Missing),
                },
                _ => return Err(Unresolved::Missing),
            };
        }
        // A row always has a path; an empty one names nothing.
        Err(Unresolved::Missing)
    }

    /// The byte offset and the member itself of `field` in `s` (anonymous unions and structs
    /// looked through); `None` when it is not there or not at a whole byte.
    fn find_raw(&self, s: &btf_rs::Struct, field: &str) -> Option<(u32, btf_rs::Member)> {
        self.find(s, field, 0, &|bits, m| {
            bits.is_multiple_of(8).then(|| (bits / 8, m.clone()))
        })
    }

    /// Whether a member of type `t` is as wide as `read`.
    pub(super) fn check_width(&self, t: &Type, read: Read) -> Result<(), Unresolved> {
        match read {
            Read::Embedded => Ok(()),
            Read::Value(n) => match self.type_size(t) {
                Some(size) if size == n => Ok(()),
                size => Err(Unresolved::Width {
                    member: size.unwrap_or(0),
                    read: n,
                }),
            },
            Read::Element(n) => {
                let elem = match t {
                    Type::Array(a) => self.element(a).and_then(|e| self.type_size(&e)),
                    _ => None,
                };
                match elem {
                    Some(size) if size == n => Ok(()),
                    size => Err(Unresolved::Width {
                        member: size.unwrap_or(0),
                        read: n,
                    }),
                }
            }
        }
    }

    /// An array's element type, under typedefs and qualifiers.
    fn element(&self, a: &btf_rs::Array) -> Option<Type> {
        self.btf
            .resolve_chained_type(a)
            .ok()
            .and_then(|t| self.strip(t))
    }

    /// Size in bytes of a value of type `t`; `None` for types without one (functions, `void`).
    pub(super) fn type_size(&self, t: &Type) -> Option<u32> {
        let size = match t {
            Type::Int(i) => i.size(),
            // The programs run on 64-bit kernels only.
            Type::Ptr(_) => 8,
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Float(f) => f.size(),
            Type::Array(a) => {
                return self
                    .element(a)
                    .and_then(|e| self.type_size(&e))?
                    .checked_mul(u32::try_from(a.len()).ok()?)
            }
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => return self.type_size(&self.strip(t.clone())?),
            _ => return None,
        };
        u32::try_from(size).ok()
    }
}
