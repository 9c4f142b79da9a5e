//! Why a read of the forecast failed.

use std::io;

/// Why a read of the model failed. None is fatal: the cgroup is skipped this tick.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    /// The cgroup went away (its container stopped).
    #[error("cgroup {0} is gone")]
    Gone(String),
    /// The cgroup has no such control file (kernel or hierarchy without it).
    #[error("{0} does not exist")]
    Missing(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file held something unexpected.
    #[error("{path} holds {text:?}")]
    Parse {
        /// The file.
        path: String,
        /// What it held.
        text: String,
    },
}
