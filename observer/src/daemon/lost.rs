//! What a daemon with `--pin-dir` has reported lost: kept across restarts, so the next run
//! on the same pinned counters reports only what was lost after them.

use std::{io, path::PathBuf};

use tracing::warn;

use crate::kernel::maps::LostCounts;

/// Where a daemon with `--pin-dir` keeps the losses it has reported (in the state
/// directory: a bpffs holds no files): the next run on the same pinned counters reports only
/// what was lost after them.
pub struct LostFile {
    path: PathBuf,
    pins: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LostReported {
    pins: String,
    reported: LostCounts,
}

impl LostFile {
    /// The file of the losses reported from the counters pinned in `pins`.
    pub fn new(state_dir: &std::path::Path, pins: &std::path::Path) -> LostFile {
        LostFile {
            path: state_dir.join("pinned-lost.json"),
            pins: pins.display().to_string(),
        }
    }

    /// The losses reported from these pins, if this file is about them.
    pub fn read(&self) -> Option<LostCounts> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let r: LostReported = serde_json::from_str(&text).ok()?;
        (r.pins == self.pins).then_some(r.reported)
    }

    /// Records the losses reported (best effort: a failure is logged).
    pub fn write(&self, reported: LostCounts) {
        let r = LostReported {
            pins: self.pins.clone(),
            reported,
        };
        let tmp = self.path.with_extension("tmp");
        let ok = serde_json::to_vec(&r)
            .map_err(io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = ok {
            warn!(error = %e, path = %self.path.display(),
                "cannot record the losses reported: a restart may report them again");
        }
    }
}
