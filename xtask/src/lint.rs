//! The workspace's lints during `cargo xtask test`: clippy over every crate, target and
//! feature, run beside the builds and tests rather than after them.
//!
//! A check build shares nothing with the test builds (its dependencies are compiled again,
//! metadata only), and took 81 s of a cold run's 2 cores after everything else. The tests
//! spend most of their time waiting on kills, leaks and guests; at SCHED_IDLE the lint only
//! takes a core no test wants, so no test waits for it. (Beside the musl builds it may cost
//! more than it saves: that build phase took 811 s with it, 677 s before; not yet separated
//! from building both architectures in one cargo.)

use std::{
    fs,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::command::root;

/// The running lint. Dropped unfinished (a failed test run), it is stopped.
pub struct Lint {
    child: Option<Child>,
    log: PathBuf,
    started: Instant,
}

impl Lint {
    /// Starts `cargo clippy --workspace --all-targets --all-features -D warnings` at idle
    /// priority, in a target directory of its own (`target/lint`, so neither cargo waits on
    /// the other's lock), its output in `target/lint.log`. Needs the build's packages
    /// (protoc) and the eBPF object, which the code it lints embeds.
    pub fn start() -> Result<Lint> {
        let root = root();
        fs::create_dir_all(root.join("target"))?;
        let log = root.join("target/lint.log");
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("chrt")
            .args(["--idle", "0", "cargo", "clippy"])
            .args(["--workspace", "--all-targets", "--all-features"])
            .args(["--", "-D", "warnings"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", root.join("target/lint"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group, so a stop reaches cargo's compilers too.
            .process_group(0)
            .spawn()
            .context("starting clippy (chrt --idle 0 cargo clippy)")?;
        eprintln!(
            "xtask: clippy runs beside the tests at idle priority (log: {})",
            log.display()
        );
        Ok(Lint {
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the lint; fails with its output unless it passed.
    pub fn finish(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait().context("waiting for clippy")?;
        let secs = self.started.elapsed().as_secs_f64();
        if !status.success() {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            bail!("clippy failed ({status}, after {secs:.0} s):\n{text}");
        }
        eprintln!("xtask: clippy passed (started {secs:.0} s ago, beside the tests)");
        Ok(())
    }
}

impl Drop for Lint {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}
