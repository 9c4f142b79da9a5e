//! Which containerd the tests run: OOMX_CONTAINERD names the release (`1.6.20`, the
//! machine's own and the default; `1.7.24`; `2.1.9`), OOMX_CONTAINERD_DIR the directory of
//! its unpacked binaries (`cargo xtask` fetches them from Debian's later suites into the
//! project's cache and sets both). Each release gets its configuration written in its own
//! format: version 2 for 1.x, version 3 for 2.x (whose CRI is split into
//! `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`), never left to 2.x's
//! migration of an older file.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The release the tests use when OOMX_CONTAINERD is not set: Debian 12's.
pub const DEFAULT: &str = "1.6.20";

/// The containerd release of this test run.
#[derive(Debug, Clone)]
pub struct Version {
    /// The release's name, as OOMX_CONTAINERD gives it (`2.1.9`).
    pub name: String,
    /// Where its `containerd`, `ctr` and `containerd-shim-runc-v2` are; `None`: the
    /// system's, on PATH.
    pub bin_dir: Option<PathBuf>,
}

impl Version {
    /// The release OOMX_CONTAINERD selects (checked once: its `containerd --version` must
    /// name it).
    pub fn selected() -> &'static Version {
        static V: OnceLock<Version> = OnceLock::new();
        V.get_or_init(|| {
            let name = std::env::var("OOMX_CONTAINERD").unwrap_or_else(|_| DEFAULT.into());
            let bin_dir = std::env::var_os("OOMX_CONTAINERD_DIR")
                .map(PathBuf::from)
                .or_else(|| (name != DEFAULT).then(|| cached_bin_dir(&name)));
            let v = Version { name, bin_dir };
            v.check();
            v
        })
    }

    /// The major version (1 or 2).
    pub fn major(&self) -> u32 {
        self.name
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(1)
    }

    /// Whether it reads configuration version 3 (containerd 2.x).
    pub fn config_v3(&self) -> bool {
        self.major() >= 2
    }

    /// One of its binaries: from its directory, or the system's by name.
    pub fn bin(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        }
    }

    /// PATH for the daemon: its directory first, so it starts its own
    /// `containerd-shim-runc-v2` (containerd looks the shim up on PATH), and the system's
    /// runc after it.
    pub fn path_env(&self) -> Option<OsString> {
        let dir = self.bin_dir.as_ref()?;
        let rest = std::env::var_os("PATH").unwrap_or_default();
        std::env::join_paths(std::iter::once(dir.clone()).chain(std::env::split_paths(&rest))).ok()
    }

    fn check(&self) {
        if let Some(d) = &self.bin_dir {
            for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
                assert!(
                    d.join(tool).is_file(),
                    "OOMX_CONTAINERD={}: no {tool} in {} (`cargo xtask test` fetches it)",
                    self.name,
                    d.display()
                );
            }
        }
        let Ok(out) = Command::new(self.bin("containerd"))
            .arg("--version")
            .output()
        else {
            // require_tools says what is missing.
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.split_whitespace()
                .any(|w| w.trim_start_matches('v').starts_with(&self.name)),
            "OOMX_CONTAINERD={} but `containerd --version` says {text}",
            self.name
        );
    }

    /// The daemon's configuration: its root, state and sockets under `dir`, `plugins` (the
    /// CRI's sections, or `None`: the CRI off), in this release's own format.
    pub fn config(&self, dir: &Path, socket: &Path, plugins: Option<&str>) -> String {
        let (d, s) = (dir.display(), socket.display());
        let plugins = match plugins {
            Some(p) => p.to_string(),
            None => "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n".to_string(),
        };
        let head = if self.config_v3() {
            "version = 3"
        } else {
            "version = 2"
        };
        // 2.x turns NRI on, with one socket for the whole machine (/var/run/nri): a test
        // daemon must not take it.
        let nri = if self.config_v3() {
            "[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n"
        } else {
            ""
        };
        format!(
            "{head}\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n{plugins}\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n{nri}"
        )
    }
}

/// Where `cargo xtask` unpacks a later release for this host's architecture.
fn cached_bin_dir(name: &str) -> PathBuf {
    let cache = std::env::var_os("OOM_OBSERVER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("oom-observer"))
        })
        .unwrap_or_else(|| PathBuf::from("/var/cache/oom-observer"));
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    cache
        .join("containerd")
        .join(format!("{name}_{arch}"))
        .join("root/usr/bin")
}
