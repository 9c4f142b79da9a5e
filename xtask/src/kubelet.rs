//! `cargo xtask kubelet`: what the kubelet reads from containerd's CRI plugin when a
//! container is OOM-killed, with and without oom-observer, on an idle and a loaded node.
//! The runs are `tests/tests/kubelet.rs` (release build); this writes `docs/kubelet.md`
//! around their table and copies their rows to `docs/kubelet.json`.

use std::fs;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    command::{cache_dir, output, root},
    long::release_test,
};

/// Runs the host rows with `kills` pods each (none when 0) and the guest rows with
/// `vm_kills` (none when 0; only the guest `only` when given), and writes the page; fails,
/// after writing it, when a row broke its promise. Only a full run (host and every guest)
/// writes `docs/`; a partial one writes under `target/kubelet/`. With `rerender`, nothing
/// runs: the page is written again from the host and guest rows the last run left in
/// `target/kubelet/` (after a change to the page's text).
///
/// `containerd` names the release (crate::containerd::RELEASES); a run against another
/// than the default is partial too (docs/kubelet.md is the default's page; the others'
/// rows are in docs/compat.md).
pub fn kubelet(
    kills: usize,
    vm_kills: usize,
    only: Option<&str>,
    rerender: bool,
    containerd: &str,
) -> Result<()> {
    let root = root();
    let release = crate::containerd::release(containerd)?;
    let default = release.name == crate::containerd::default_name();
    let work = if default {
        root.join("target/kubelet")
    } else {
        root.join("target/kubelet").join(release.name)
    };
    fs::create_dir_all(&work)?;
    let t0 = std::time::Instant::now();
    let mut failed = Vec::new();
    let host = kills > 0 || rerender;
    let full = host && vm_kills > 0 && only.is_none() && !rerender && default;
    if host && !rerender {
        let _ = fs::remove_file(work.join("kubelet.json"));
        let _ = fs::remove_file(work.join("kubelet.host.md"));
        let n = kills.to_string();
        let mut env: Vec<(&str, std::ffi::OsString)> = vec![
            ("OOMX_KUBELET_KILLS", n.into()),
            ("OOMX_KUBELET_DIR", work.clone().into()),
        ];
        for (k, v) in crate::containerd::test_env(&cache_dir(), release)? {
            env.push((k, v.into()));
        }
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        // The test writes its rows before it checks them: a broken promise (a container
        // read as Error with oom-observer running) is a result to publish, then a failure.
        if let Err(e) = release_test("kubelet", &env) {
            if !work.join("kubelet.json").exists() {
                return Err(e);
            }
            failed.push(format!("host: {e:#} (see the test's output above)"));
        }
    }
    let (table, mut rows) = if host {
        let table = fs::read_to_string(work.join("kubelet.host.md"))
            .context("the kubelet test wrote no table")?;
        let json = fs::read_to_string(work.join("kubelet.json"))
            .context("the kubelet test wrote no rows")?;
        (table, serde_json::from_str::<Vec<Value>>(&json)?)
    } else {
        ("Not run (`--kills 0`).\n".to_string(), Vec::new())
    };
    let mut guests = String::new();
    let mut vm_kills = vm_kills;
    let saved = work.join("kubelet.guests.json");
    if rerender {
        // The guest rows of the last run, if it had any.
        if let Ok(text) = fs::read_to_string(&saved) {
            let v: Value = serde_json::from_str(&text)?;
            guests = v["markdown"].as_str().unwrap_or_default().to_string();
            vm_kills = v["vm_kills"].as_u64().unwrap_or(0) as usize;
            rows.extend(v["rows"].as_array().cloned().unwrap_or_default());
        } else {
            vm_kills = 0;
        }
    } else if vm_kills > 0 {
        let mut guest_rows = Vec::new();
        for (name, r) in crate::vm::kubelet_vm(vm_kills, only, true, release)? {
            match r {
                Ok(v) => {
                    let problems = verdict_problems(&v);
                    if let Some(t) = v["table"].as_str() {
                        guests += &format!(
                            "### {name} (Linux {})\n\n{t}\n",
                            v["kernel"].as_str().unwrap_or("?")
                        );
                    }
                    if let Some(a) = v["rows"].as_array() {
                        guest_rows.extend(a.iter().cloned());
                    }
                    if !problems.is_empty() {
                        guests += &format!("**Problems:** {}\n\n", problems.join("; "));
                        failed.push(format!("{name}: {}", problems.join("; ")));
                    }
                }
                Err(e) => {
                    guests += &format!("### {name}\n\nNo rows: {e:#}\n\n");
                    failed.push(format!("{name}: {e:#}"));
                }
            }
        }
        fs::write(
            &saved,
            serde_json::to_string_pretty(&serde_json::json!({
                "vm_kills": vm_kills,
                "markdown": guests,
                "rows": guest_rows,
            }))?,
        )?;
        rows.extend(guest_rows);
    } else {
        let _ = fs::remove_file(&saved);
    }
    let kills = rows
        .iter()
        .find(|r| r["where"] == "host")
        .and_then(|r| r["kills"].as_u64())
        .map_or(kills, |k| k as usize);
    let mut flags = format!("--kills {kills} --vm-kills {vm_kills}");
    if !default {
        flags += &format!(" --containerd {}", release.name);
    }
    if let Some(o) = only {
        flags += &format!(" --only {o}");
    }
    let (date, wall) = if rerender {
        let modified = fs::metadata(work.join("kubelet.json"))?.modified()?;
        let secs = modified.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let date = output(std::process::Command::new("date").args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%Y-%m-%d %H:%M UTC",
        ]))?;
        (date, "run time: see each row".to_string())
    } else {
        let date = output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
        (date, format!("{:.0} s", t0.elapsed().as_secs_f64()))
    };
    let page = page(&table, &guests, &flags, vm_kills, date.trim(), &wall)
        .replace("{observer_line}", &observer_line(&rows))
        .replace("{guest_lines}", &guest_lines(&rows));
    // A partial run never overwrites the results page (issue 15 item 5).
    let out = if full || rerender {
        root.join("docs")
    } else {
        work.join("partial")
    };
    fs::create_dir_all(&out)?;
    // The systemd driver's rows (`cargo xtask systemd-guest --pods N`) are not this run's:
    // they stay, in the JSON and their section of the page.
    let old = |f: &str| fs::read_to_string(root.join("docs").join(f)).unwrap_or_default();
    let page = crate::vm::systemd_rows::carry_over(&old("kubelet.md"), &page);
    let old_rows: Vec<Value> = serde_json::from_str(&old("kubelet.json")).unwrap_or_default();
    rows.extend(crate::vm::systemd_rows::systemd_rows(&old_rows));
    if full || rerender {
        // So do the other releases' rows that compat.md quotes (their partial runs' rows,
        // copied in by hand): this run measured only its own release.
        rows.extend(
            old_rows
                .iter()
                .filter(|r| r["cgroup_driver"] != "systemd" && r["containerd"] != release.name)
                .cloned(),
        );
    }
    fs::write(out.join("kubelet.md"), page)?;
    fs::write(
        out.join("kubelet.json"),
        serde_json::to_string_pretty(&rows)? + "\n",
    )?;
    eprintln!(
        "xtask: wrote {} and {}",
        out.join("kubelet.md").display(),
        out.join("kubelet.json").display()
    );
    if !failed.is_empty() {
        bail!("kubelet rows failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// A guest's `kubelet` verdict's problems; a verdict that lists none at all is one.
fn verdict_problems(v: &Value) -> Vec<String> {
    match v["problems"].as_array() {
        Some(a) => a
            .iter()
            .map(|p| p.as_str().unwrap_or("?").to_string())
            .collect(),
        None => vec![format!("a verdict without problems: {v}")],
    }
}

/// The guest rows with `pods` pods each, as the README's test command runs them: every
/// container with oom-observer must read OOMKilled a second after its exit; the rows go to
/// `target/kubelet/quick-vm.json`, never to docs/. `runs`: each containerd release with the
/// guest it runs in (`None`: every cgroup v2 guest).
pub fn quick_vm(pods: usize, runs: &[(&str, Option<&str>)]) -> Result<()> {
    let work = root().join("target/kubelet");
    fs::create_dir_all(&work)?;
    let mut failed = Vec::new();
    let mut all = Vec::new();
    for (release, only) in runs {
        let release = crate::containerd::release(release)?;
        for (name, r) in crate::vm::kubelet_vm(pods, *only, false, release)? {
            let name = format!("{name}, containerd {}", release.name);
            match r {
                Ok(v) => {
                    if let Some(t) = v["table"].as_str() {
                        eprintln!("\nkubelet rows, {name}:\n{t}");
                    }
                    let problems = verdict_problems(&v);
                    if !problems.is_empty() {
                        failed.push(format!("{name}: {}", problems.join("; ")));
                    }
                    all.push(v);
                }
                Err(e) => failed.push(format!("{name}: {e:#}")),
            }
        }
    }
    fs::write(
        work.join("quick-vm.json"),
        serde_json::to_string_pretty(&Value::from(all))?,
    )?;
    if !failed.is_empty() {
        bail!(
            "kubelet rows in the v2 guests failed:\n{}",
            failed.join("\n")
        );
    }
    Ok(())
}

/// What the guest rows say, per guest and load: at-exit OOMKilled without and with
/// oom-observer, in one paragraph (empty without guest rows).
fn guest_lines(rows: &[Value]) -> String {
    let mut out = Vec::new();
    for arch in ["x86_64", "arm64"] {
        let mut parts = Vec::new();
        for load in ["idle", "loaded"] {
            let cell = |observer: bool| {
                rows.iter()
                    .find(|r| {
                        r["where"] == "guest"
                            && r["arch"] == arch
                            && r["load"] == load
                            && r["observer"] == observer
                    })
                    .map(|r| {
                        format!(
                            "{}/{}",
                            r["oomkilled_at_exit"].as_u64().unwrap_or(0),
                            r["kills"].as_u64().unwrap_or(0)
                        )
                    })
            };
            if let (Some(without), Some(with)) = (cell(false), cell(true)) {
                parts.push(format!(
                    "{load}: {without} without oom-observer, {with} with it"
                ));
            }
        }
        if !parts.is_empty() {
            out.push(format!("{arch} guest, {}", parts.join("; ")));
        }
    }
    if out.is_empty() {
        return String::new();
    }
    format!(
        "Read as OOMKilled at the first EXITED status, in this run: {}.\n",
        out.join(". ")
    )
}

/// What the host rows with oom-observer say about its promise, in one sentence.
fn observer_line(rows: &[Value]) -> String {
    let (mut kills, mut right) = (0, 0);
    for r in rows
        .iter()
        .filter(|r| r["where"] == "host" && r["observer"] == true)
    {
        kills += r["kills"].as_u64().unwrap_or(0);
        right += r["oomkilled_at_exit"].as_u64().unwrap_or(0);
    }
    if kills == right {
        format!(
            "In this run the rows with oom-observer read OOMKilled at exit in all {kills} kills \
             (the test asserts it: a run in which one does not fails)."
        )
    } else {
        format!(
            "In this run {} of {kills} kills with oom-observer still read Error or other at \
             exit: the window is real (the test asserts 100% and failed).",
            kills - right
        )
    }
}

fn page(table: &str, guests: &str, flags: &str, vm_kills: usize, date: &str, wall: &str) -> String {
    let guests = if vm_kills == 0 {
        GUESTS_MISSING.to_string()
    } else {
        format!("{GUESTS_INTRO}\n{guests}{{guest_lines}}\n{GUESTS_READING}")
    };
    format!(
        r#"# What the kubelet reads: `OOMKilled` or `Error`

`cargo xtask kubelet {flags}` ({date}, {wall}, release build). Rows as JSON:
[kubelet.json](kubelet.json).

Each pod is made the way the kubelet makes it, through containerd's own CRI plugin (the
`k8s-cri` crate's CRI v1 client; harness: `tests/src/cri/`): a pod cgroup holding the pod's
memory limit (128 MiB) is passed as RunPodSandbox's cgroup parent, then CreateContainer (limit
64 MiB, a busybox image built locally), StartContainer. Host network, no CNI; the pause and
busybox images are OCI archives built by the tests (`oci-archive`) and imported with
`ctr images import`. The pod and container labels are the ones the kubelet itself adds
(`io.kubernetes.pod.name`, `.namespace`, `.uid`, `io.kubernetes.container.name`); annotations,
cgroupsPath and containerd's records are the CRI plugin's own.

The container's init (a shell) holds 5/8 of its limit and sleeps on CPU 1; a child pinned on
CPU 0 then allocates past the limit, so the OOM killer runs on CPU 0 and kills the init, whose
exit runs on CPU 1. A pidfd on the init says the instant its exit is visible; from then on
ContainerStatus is read without pause until the CRI reports the container EXITED, as the
kubelet's next relist would see it ("OOMKilled at exit"), and again 1 s later. `Error` is the
race lost (exit code 137 with reason `Error`); `other` is anything else (no EXITED status
within 30 s, or a reason other than the two). Every container ended with exit code 137.

- **idle**: nothing else runs (but see below: this machine is shared).
- **loaded**: the bench's loaded node (2 busy loops per core at ordinary priority, a thread
  creating and removing scratch cgroups) plus the scenario that loses today in the cgroup v2
  guests (the kill on a starved CPU, the victim's exit on another): CPU 0 starved by 8 busy
  loops in a scratch cgroup whose CPU weight outranks both the kernel's workers (the tree's
  `cpu.shares` 262144 against a nice-0 kworker's 1024) and the pods there (10240 against 1024),
  while the victim exits on CPU 1.
- **observer**: `oom-observer run` against the same containerd (TaskOOM published to
  containerd before the kill's JSON line), or not running at all.

## Host: cgroup v1, runc

{table}
How to read it. On this host (cgroup v1) the runc shim of containerd 1.6 learns of an OOM
from the memory cgroup's `memory.oom_control` eventfd, which the kernel signals from the OOM
path itself, once per OOM event of the cgroup: the shim's TaskOOM comes before TaskExit on
containerd's event stream, often many of them for one kill. Even so, a container can read
`Error` at its first EXITED status and `OOMKilled` a second later (listed under the table, if
any, with containerd's events for each: TaskOOMs, oom-observer's included, before the TaskExit
and all of them well before the read). The reason is in containerd 1.6's CRI plugin: it does not take a container's
exit from the event stream, in order with its TaskOOMs. It waits for each task's exit on its
own (`startContainerExitMonitor`, on `task.Wait()`), while TaskOOMs go through the plugin's one
event loop, which records each of them in the container's status on disk. When that loop
lags (here: a storm of the shim's own TaskOOMs for every kill, on a busy machine), the exit is
recorded first, and a kubelet relist in between reads `Error`. So on containerd 1.6 a TaskOOM
that is first on containerd's stream, which is what oom-observer guarantees, still leaves a
window at the CRI. {{observer_line}}

The "exit → first EXITED read" column is the CRI's own delay after the init has exited: its
exit handling deletes the task before it records the exit.

**Noise.** This machine (2 cores) was shared with other builds and tests during the run: the
timing column and the idle rows are not measured on a quiet machine.

{guests}
## gVisor (runsc) through the CRI: not possible with the registries' packages

A gVisor pod through the CRI needs gVisor's containerd shim, `containerd-shim-runsc-v1`.
Checked on {date}: Debian 12 ships `runsc` (release 20221219) without the shim
(`apt-cache search runsc`, `apt-cache search containerd-shim`: nothing else), and its Go source
package `golang-gvisor-gvisor-dev` (same release) leaves out `pkg/shim`, so it cannot be built
from Debian either. PyPI's `gvisor` package is Python bindings that drive a `runsc` already on
`PATH`; crates.io has nothing. Through the runc shim with a runsc wrapper the CRI cannot work
(the shim reports one init pid for the pause and the app container and sends one TaskExit for
both; see the project's platform notes), so gVisor stays covered at containerd's event level
(`tests/tests/containerd.rs`, `tests/tests/audit.rs`).
"#
    )
}

const GUESTS_INTRO: &str = "## cgroup v2 guests (x86_64 and arm64)

The same rows in the cgroup v2 guests of `cargo xtask race --vm` (Debian's Linux 6.12 under qemu
TCG emulation, 2 vCPUs, containerd 1.6.20 and runc from Debian in the initramfs), the guest's
`/init` in kubelet mode (`oomx.kubelet=N`). There the runc shim learns of an OOM kill from
`memory.events` through inotify, which the kernel delivers from a workqueue on the CPU of the
kill: the starved CPU 0 in the loaded rows. The CRI unpacks images with the `native`
snapshotter (overlayfs is a module the initramfs does not carry). Under emulation everything
is 10-100x slower than on hardware, both guests ran at once, on a shared host.
";

const GUESTS_READING: &str = "How to read it. At containerd's event level the shim's own TaskOOM can come after
TaskExit, or not at all ([race-vm.md](race-vm.md); under the systemd driver,
[compat.md](compat.md)), yet containerd 1.6's CRI alone reads nearly every container as OOMKilled at its exit here: its
exit handling deletes the task before it records the exit, and under emulation that took 3 to
10 s (the \"exit → first EXITED read\" column), so even a late TaskOOM from the shim is applied
first. The containers it did not read as OOMKilled at exit are listed under each table. On
real hardware that window is far shorter (on this host, the same column), and a TaskOOM that
comes after TaskExit is what then reads as `Error`. With oom-observer our TaskOOM comes from the kernel's
kill, ahead of TaskExit on containerd's stream, and does not depend on that window.
";

const GUESTS_MISSING: &str = "## cgroup v2 guests (x86_64 and arm64): not run yet

`cargo xtask kubelet --vm-kills N` boots both cgroup v2 guests of `cargo xtask race --vm` with
their `/init` in kubelet mode (`oomx.kubelet=N`, `tests/src/bin/oomx-vm-guest/race.rs`) and
runs the same rows there. What that mode adds to the guest, because the CRI needs it and a bare
initramfs lacks it: `/etc/hosts` and `/etc/resolv.conf` (a host-network sandbox copies both),
loopback up (the CRI's streaming server listens on 127.0.0.1), the cpu controller at the root
(the starved CPU's weight), and containerd's `native` snapshotter (the CRI always unpacks images
into a snapshotter; overlayfs is a module in Debian's cloud kernels and the initramfs carries
no modules). It compiles but has not been booted: the release cross builds of the guest
binaries (x86_64 and arm64 musl) did not fit into the time of this work on the shared 2-core
machine. Until it runs, the cgroup v2 race is shown at containerd's event level only
([race-vm.md](race-vm.md)), which is where containerd's own TaskOOM loses to TaskExit under
the starved-CPU load.
";
