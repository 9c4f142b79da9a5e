//! Ring-buffer items as typed records, checked for kind and size.

use observer_common::{
    kind, CgroupAttachRecord, CgroupMkdirRecord, OomKillRecord, CGROUP_PATH_LEN,
};

/// A record read from the ring buffer.
#[derive(Debug, Clone)]
pub enum Record {
    /// An OOM kill or a memcg OOM without a kill.
    Oom(OomKillRecord),
    /// A cgroup was created.
    Mkdir(CgroupMkdirRecord),
    /// A process moved into a memory cgroup.
    Attach(CgroupAttachRecord),
}

/// Why a ring-buffer item could not be read as a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its kind's record.
    #[error("record of kind {kind} is {len} bytes, expected {want}")]
    Short {
        /// The kind field.
        kind: u32,
        /// Bytes received.
        len: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A kind this daemon does not know (an object/daemon mismatch).
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, RecordError> {
    let want = std::mem::size_of::<T>();
    if bytes.len() < want {
        return Err(RecordError::Short {
            kind,
            len: bytes.len(),
            want,
        });
    }
    // SAFETY: the length was checked; T is a repr(C) plain-data record the kernel wrote.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl Record {
    /// Parses one ring-buffer item.
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        let k = read::<u32>(bytes, 0)?;
        match k {
            kind::OOM_KILL | kind::MEMCG_OOM | kind::VICTIM_EXIT => {
                Ok(Record::Oom(read(bytes, k)?))
            }
            kind::CGROUP_MKDIR => Ok(Record::Mkdir(read(bytes, k)?)),
            kind::CGROUP_ATTACH => Ok(Record::Attach(read(bytes, k)?)),
            other => Err(RecordError::UnknownKind(other)),
        }
    }
}

/// The path carried by a mkdir record, or `None` when it was cut short.
pub fn mkdir_path(r: &CgroupMkdirRecord) -> Option<String> {
    let n = r.path_len as usize;
    if n >= CGROUP_PATH_LEN {
        return None;
    }
    let bytes = &r.path[..n.min(CGROUP_PATH_LEN)];
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
    let s = String::from_utf8_lossy(bytes).into_owned();
    Some(if s.is_empty() { "/".into() } else { s })
}
