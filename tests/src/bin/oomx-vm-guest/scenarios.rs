//! The OOM scenarios, each a real kill in scratch cgroups of the guest's cgroup v2 tree.

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    daemon::Daemon,
    expect::{self, Errors, Sees, Want},
};

pub const HOG: &str = "/bin/oomx-hog";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a hog may take to be killed; a global OOM under emulation is the slowest.
const KILL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the event may take to arrive after the kill.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a duplicate event to show up before events are counted.
const SETTLE: Duration = Duration::from_millis(500);

pub const ALL: [&str; 4] = ["single", "pod", "group", "global"];

pub struct Ctx<'a> {
    pub strategy: &'a str,
    pub sees: Sees,
    pub daemon: &'a Daemon,
}

/// Runs one scenario; `Ok` carries a short description of what was seen.
pub fn run(name: &str, ctx: &Ctx<'_>) -> Result<String, String> {
    match name {
        "single" => single(ctx),
        "pod" => pod(ctx),
        "group" => group(ctx),
        "global" => global(ctx),
        other => Err(format!("unknown scenario {other}")),
    }
}

/// A process over `memory.max` in a leaf cgroup.
fn single(ctx: &Ctx<'_>) -> Result<String, String> {
    let cg = Cg::new(&format!("oomx-{}-single", ctx.strategy))?;
    cg.set("memory.max", &(32u64 << 20).to_string())?;
    let before = ctx.daemon.events().len();
    let mut hog = spawn_hog(&cg.dir, &[], false)?;
    let pid = hog.id();
    wait_killed(&mut hog, "the hog")?;
    let evs = events_for(ctx, &[pid], before)?;
    let e = &evs[0];
    let mut err = Errors::default();
    expect::common(&mut err, e, ctx.strategy);
    let want = Want {
        pid,
        comm: "oomx-hog",
        cgroup: &cg.path,
    };
    expect::victim(&mut err, e, ctx.sees, &want, true);
    expect::oom(&mut err, e, ctx.sees, Some(&cg.path));
    expect::explained(
        &mut err,
        e,
        ctx.sees,
        &expect::Domain::Memcg(32 << 20),
        true,
        true,
    );
    err.eq(e, "trigger.pid", &e["trigger"]["pid"], pid.into());
    verdict(err, e)
}

/// The Kubernetes pod/container shape: the limit on the parent, the victim in a child
/// created after the observer started (its path comes from the kernel's mkdir event).
fn pod(ctx: &Ctx<'_>) -> Result<String, String> {
    let mut pod = Cg::new(&format!("oomx-{}-pod", ctx.strategy))?;
    pod.set("memory.max", &(48u64 << 20).to_string())?;
    pod.set("cgroup.subtree_control", "+memory")?;
    let (ctr_dir, ctr_path) = pod.child("ctr")?;
    let before = ctx.daemon.events().len();
    let mut hog = spawn_hog(&ctr_dir, &[], false)?;
    let pid = hog.id();
    wait_killed(&mut hog, "the hog")?;
    let evs = events_for(ctx, &[pid], before)?;
    let e = &evs[0];
    let mut err = Errors::default();
    expect::common(&mut err, e, ctx.strategy);
    let want = Want {
        pid,
        comm: "oomx-hog",
        cgroup: &ctr_path,
    };
    expect::victim(&mut err, e, ctx.sees, &want, true);
    expect::oom(&mut err, e, ctx.sees, Some(&pod.path));
    // The pod's counter, not the container's.
    expect::explained(
        &mut err,
        e,
        ctx.sees,
        &expect::Domain::Memcg(48 << 20),
        true,
        true,
    );
    err.eq(e, "trigger.pid", &e["trigger"]["pid"], pid.into());
    verdict(err, e)
}

/// `memory.oom.group=1`: three bystanders hold memory, a fourth process runs into the limit,
/// and the kernel kills all four: one event each.
fn group(ctx: &Ctx<'_>) -> Result<String, String> {
    let cg = Cg::new(&format!("oomx-{}-group", ctx.strategy))?;
    cg.set("memory.max", &(64u64 << 20).to_string())?;
    cg.set("memory.oom.group", "1")?;
    let before = ctx.daemon.events().len();
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(spawn_holder(&cg.dir, 12)?);
    }
    let mut grower = spawn_hog(&cg.dir, &[], false)?;
    let trigger = grower.id();
    let mut pids: Vec<u32> = holders.iter().map(|h| h.id()).collect();
    pids.push(trigger);
    wait_killed(&mut grower, "the allocating hog")?;
    for h in &mut holders {
        wait_killed(h, "a holder (memory.oom.group)")?;
    }
    let evs = events_for(ctx, &pids, before)?;
    let mut err = Errors::default();
    for e in &evs {
        let pid = e["victim"]["pid"].as_u64().unwrap_or(0) as u32;
        expect::common(&mut err, e, ctx.strategy);
        let want = Want {
            pid,
            comm: "oomx-hog",
            cgroup: &cg.path,
        };
        expect::victim(&mut err, e, ctx.sees, &want, pid == trigger);
        expect::oom(&mut err, e, ctx.sees, Some(&cg.path));
        let has_task = ctx.sees.every_victim_task || pid == trigger;
        let chosen = evs[0]["victim"]["pid"] == e["victim"]["pid"];
        expect::explained(
            &mut err,
            e,
            ctx.sees,
            &expect::Domain::Memcg(64 << 20),
            has_task,
            chosen,
        );
        err.eq(e, "trigger.pid", &e["trigger"]["pid"], trigger.into());
    }
    if ctx.sees.oom_control {
        // One invocation of the OOM killer: one incident id on all four, counted 1..=4.
        let ids: Vec<&Value> = evs.iter().map(|e| &e["incident"]["id"]).collect();
        err.check(
            ids.iter().all(|i| *i == ids[0]),
            format!("one incident id on every victim: {ids:?}"),
        );
        let mut n: Vec<u64> = evs
            .iter()
            .filter_map(|e| e["incident"]["victims"].as_u64())
            .collect();
        n.sort_unstable();
        err.check(
            n == (1..=evs.len() as u64).collect::<Vec<_>>(),
            format!("incident.victims {n:?}"),
        );
    }
    verdict(err, &evs[0]).map(|_| {
        format!(
            "{} kills, victim cgroups {}",
            evs.len(),
            evs.iter()
                .map(|e| e["victim"]["cgroup"].to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    })
}

/// A system-wide OOM: no cgroup limit, the guest's own memory runs out.
///
/// A small ballast process waits beside the hog. Without one, the hog and init (and the
/// daemon, at `oom_score_adj` -1000) are the only tasks; once the hog is marked skipped
/// (reaped, or given up on by the OOM reaper, which waits only about a second for its
/// `mmap_lock`: slow under emulation) while memory is still short, the next allocation finds
/// nothing to kill and the kernel panics ("System is deadlocked on memory": 5.10 x86_64, once
/// in CI; the cause is read from the kernel's code, not seen on that run). With it the
/// kernel kills the ballast instead; that second kill must have its own event too.
fn global(ctx: &Ctx<'_>) -> Result<String, String> {
    let cg = Cg::new(&format!("oomx-{}-global", ctx.strategy))?;
    let ballast_cg = Cg::new(&format!("oomx-{}-ballast", ctx.strategy))?;
    let mut ballast = spawn_holder(&ballast_cg.dir, 1)?;
    let before = ctx.daemon.events().len();
    let mut hog = spawn_hog(&cg.dir, &[], false)?;
    let pid = hog.id();
    wait_killed(&mut hog, "the hog")?;
    // A second kill follows the first within the same allocation's retries.
    thread::sleep(SETTLE);
    let ballast_killed =
        matches!(ballast.try_wait(), Ok(Some(s)) if s.signal() == Some(libc::SIGKILL));
    let pids: &[u32] = if ballast_killed {
        &[pid, ballast.id()]
    } else {
        &[pid]
    };
    let evs = events_for(ctx, pids, before)?;
    // Ended by us (not an OOM kill) only after the events are counted.
    let _ = ballast.kill();
    let _ = ballast.wait();
    let Some(e) = evs.iter().find(|e| e["victim"]["pid"] == pid) else {
        return Err(format!("no event for the hog (pid {pid})"));
    };
    let mut err = Errors::default();
    expect::common(&mut err, e, ctx.strategy);
    let want = Want {
        pid,
        comm: "oomx-hog",
        cgroup: &cg.path,
    };
    // In a global OOM whichever task allocates runs into it; it is usually the hog.
    let is_trigger = e["trigger"]["pid"] == pid;
    expect::victim(&mut err, e, ctx.sees, &want, is_trigger);
    expect::oom(&mut err, e, ctx.sees, None);
    let has_task = ctx.sees.every_victim_task || is_trigger;
    expect::explained(&mut err, e, ctx.sees, &expect::Domain::Node, has_task, true);
    let out = verdict(err, e)?;
    Ok(if ballast_killed {
        format!("{out}; the kernel then killed the ballast too, with its own event")
    } else {
        out
    })
}

/// A hog in `dir` that holds `mb` MiB and sleeps until killed, returned once it says it
/// holds them.
fn spawn_holder(dir: &Path, mb: u32) -> Result<Child, String> {
    let mut h = spawn_hog(dir, &["--max-mb", &mb.to_string(), "--hold"], true)?;
    let out = h.stdout.take().ok_or("holder has no stdout")?;
    let mut line = String::new();
    // Returns at the announcement, or at EOF if the holder died first.
    let _ = BufReader::new(out).read_line(&mut line);
    if !line.starts_with("holding") {
        return Err(format!("a holder of {mb} MiB did not start: {line:?}"));
    }
    Ok(h)
}

fn verdict(err: Errors, e: &Value) -> Result<String, String> {
    if err.0.is_empty() {
        Ok(format!(
            "victim {} in {} oom_cgroup {} constraint {}",
            e["victim"]["pid"], e["victim"]["cgroup"], e["oom_cgroup"]["path"], e["constraint"]
        ))
    } else {
        Err(format!("{}; event: {e}", err.0.join("; ")))
    }
}

/// Waits for one event per pid among the events after `before`, then checks that each pid
/// has exactly one and that nothing else was reported.
fn events_for(ctx: &Ctx<'_>, pids: &[u32], before: usize) -> Result<Vec<Value>, String> {
    let has = |evs: &[Value], pid: u32| evs.iter().any(|e| e["victim"]["pid"] == pid);
    if let Err(evs) = ctx.daemon.wait_for(EVENT_TIMEOUT, |evs| {
        pids.iter().all(|p| has(&evs[before.min(evs.len())..], *p))
    }) {
        return Err(format!(
            "timed out waiting for oom_kill events of pids {pids:?}; new events: {}",
            show(&evs[before.min(evs.len())..])
        ));
    }
    thread::sleep(SETTLE);
    let evs = ctx.daemon.events();
    let new = &evs[before.min(evs.len())..];
    // A victim's exit follows its kill in the same stream; everything else is a kill.
    let (exits, kills): (Vec<&Value>, Vec<&Value>) =
        new.iter().partition(|e| e["event"] == "victim_exit");
    for p in pids {
        let n = kills.iter().filter(|e| e["victim"]["pid"] == *p).count();
        if n != 1 {
            return Err(format!(
                "pid {p}: {n} oom_kill events, want exactly 1: {}",
                show(new)
            ));
        }
    }
    if kills.len() != pids.len() {
        return Err(format!(
            "{} events for {} kills (unexpected extra events): {}",
            kills.len(),
            pids.len(),
            show(new)
        ));
    }
    for x in &exits {
        // An exit of an earlier scenario's victim may land here; it was checked there.
        let Some(kill) = kills.iter().find(|k| k["seq"] == x["kill_seq"]) else {
            continue;
        };
        if x["seq"].as_u64() <= kill["seq"].as_u64() || x["exit"]["signal"] != 9 {
            return Err(format!(
                "victim_exit must follow its kill, by SIGKILL: {x} after {kill}"
            ));
        }
    }
    Ok(kills.into_iter().cloned().collect())
}

fn show(evs: &[Value]) -> String {
    if evs.is_empty() {
        return "none".into();
    }
    evs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_hog(dir: &Path, extra: &[&str], piped: bool) -> Result<Child, String> {
    Command::new(HOG)
        .arg("--join")
        .arg(dir)
        .args(extra)
        .stdout(if piped { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .map_err(|e| format!("starting {HOG}: {e}"))
}

/// Waits for an OOM kill: the process must end by SIGKILL in time.
fn wait_killed(child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.signal() == Some(libc::SIGKILL) => return Ok(()),
            Ok(Some(s)) => return Err(format!("{what} was not OOM-killed: {s}")),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} was not killed within {KILL_TIMEOUT:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    }
}

/// A scratch cgroup at the top of the guest's tree, removed (with anything left in it) on
/// drop.
pub struct Cg {
    pub dir: PathBuf,
    pub path: String,
    children: Vec<PathBuf>,
}

impl Cg {
    pub fn new(name: &str) -> Result<Cg, String> {
        let dir = Path::new(CGROUP_ROOT).join(name);
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Cg {
            dir,
            path: format!("/{name}"),
            children: Vec::new(),
        })
    }

    pub fn set(&self, file: &str, value: &str) -> Result<(), String> {
        let f = self.dir.join(file);
        fs::write(&f, value).map_err(|e| format!("writing {value} to {}: {e}", f.display()))
    }

    pub fn child(&mut self, name: &str) -> Result<(PathBuf, String), String> {
        let d = self.dir.join(name);
        fs::create_dir(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        self.children.push(d.clone());
        Ok((d, format!("{}/{name}", self.path)))
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        for d in self.children.iter().rev().chain(std::iter::once(&self.dir)) {
            // cgroup.kill (5.14+) ends everything left inside, then the directory can go;
            // older kernels get each process killed by pid.
            if fs::write(d.join("cgroup.kill"), "1").is_err() {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) on processes in our own scratch cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            for _ in 0..500 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
