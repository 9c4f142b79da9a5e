//! Where the workspace and the cache are, and how xtask runs its steps.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cache of bootstrapped tools, packages and kernels, shared by every clone.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = env::var_os("OOM_OBSERVER_CACHE") {
        return PathBuf::from(d);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("oom-observer")
}

/// Runs a setup, build or test step. Its stdout goes to our stderr (apt-get and dpkg print
/// there): xtask's own stdout is the daemon's, so `cargo xtask run` writes JSON lines only.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs the daemon with our stdout (its JSON lines) and returns the exit code xtask must end
/// with: the daemon's own (docs/cli.md, exit codes), or 128 + the signal that ended it.
pub fn run_daemon(cmd: &mut Command) -> Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

/// Runs `cmd` and returns its stdout; fails with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
