//! Ring-buffer items as typed records, checked for kind and size.

use observer_common::{
    CgroupAttachRecord, CgroupMkdirRecord, DeathRecord, OomKillRecord, Plain, RecordKind,
    CGROUP_PATH_LEN,
};

/// A record read from the ring buffer.
#[derive(Debug, Clone)]
pub enum Record {
    /// An OOM kill, a decision, a skipped kill, a victim's exit or a memcg OOM without a kill.
    Oom(OomKillRecord),
    /// A cgroup was created.
    Mkdir(CgroupMkdirRecord),
    /// A process moved into a memory cgroup.
    Attach(CgroupAttachRecord),
    /// A process that had been sent a fatal signal exited.
    Death(DeathRecord),
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

fn read<T: Plain>(bytes: &[u8], kind: u32) -> Result<T, RecordError> {
    T::read_from(bytes).ok_or(RecordError::Short {
        kind,
        len: bytes.len(),
        want: size_of::<T>(),
    })
}

impl Record {
    /// Parses one ring-buffer item.
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        let Some(k) = bytes.first_chunk::<4>().map(|b| u32::from_ne_bytes(*b)) else {
            return Err(RecordError::Short {
                kind: 0,
                len: bytes.len(),
                want: 4,
            });
        };
        match RecordKind::from_u32(k) {
            Some(
                RecordKind::OomKill
                | RecordKind::MemcgOom
                | RecordKind::VictimExit
                | RecordKind::OomDecision
                | RecordKind::OomSkipped,
            ) => Ok(Record::Oom(read(bytes, k)?)),
            Some(RecordKind::CgroupMkdir) => Ok(Record::Mkdir(read(bytes, k)?)),
            Some(RecordKind::CgroupAttach) => Ok(Record::Attach(read(bytes, k)?)),
            Some(RecordKind::SignaledExit) => Ok(Record::Death(read(bytes, k)?)),
            None => Err(RecordError::UnknownKind(k)),
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

/// A `cgroup_mkdir` record carrying `path`, as the kernel would write it (for tests).
#[cfg(test)]
pub fn mkdir_record(root: u32, id: u64, path: &[u8]) -> CgroupMkdirRecord {
    let mut m = CgroupMkdirRecord {
        kind: RecordKind::CgroupMkdir as u32,
        root,
        id,
        level: 1,
        path_len: path.len() as u32,
        path: [0; CGROUP_PATH_LEN],
    };
    m.path[..path.len()].copy_from_slice(path);
    m
}
