use observer_common::{DeathRecord, FatalSignal, RecordKind};

use super::*;

const S: u64 = 1_000_000_000;

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    for (d, b) in c.iter_mut().zip(s.bytes()) {
        *d = b;
    }
    c
}

fn signal(sig: u32, from: u32, name: &str, at: u64) -> FatalSignal {
    FatalSignal {
        ktime_ns: at,
        sig,
        sender_pid: from,
        sender_tgid: from,
        sender_comm: comm(name),
        ..FatalSignal::default()
    }
}

fn death(tgid: u32, exit_code: i32, first: FatalSignal, last: FatalSignal) -> DeathRecord {
    DeathRecord {
        kind: RecordKind::SignaledExit as u32,
        hook: 6,
        ktime_ns: 100 * S,
        pid: tgid,
        tgid,
        exit_code,
        signals: 2,
        memcg_id: 0,
        dfl_cgroup_id: 0,
        comm: comm("app"),
        first,
        last,
    }
}

fn facts(d: Option<DeathRecord>, status: u32) -> ExitFacts {
    ExitFacts {
        pid: 50,
        exit_status: status,
        death: d,
        ..ExitFacts::default()
    }
}

#[test]
fn a_plain_exit_is_exited_and_an_unseen_signal_is_unknown() {
    assert_eq!(classify(&facts(None, 3)), Cause::Exited);
    assert_eq!(classify(&facts(None, 0)), Cause::Exited);
    assert_eq!(classify(&facts(None, 137)), Cause::UnknownSignal);
}

#[test]
fn the_init_s_own_oom_kill_wins_over_its_sigkill() {
    let k = signal(9, 77, "hog", 99 * S);
    let mut f = facts(Some(death(50, 9, k, k)), 137);
    f.init_killed = Some((4, Some("container".into())));
    assert_eq!(classify(&f), Cause::OomKill);
}

#[test]
fn a_stop_after_its_grace_period_is_the_runtime_s() {
    let term = signal(15, 900, "runc", 60 * S);
    let kill = signal(9, 901, "runc", 90 * S);
    let d = death(50, 9, term, kill);
    assert_eq!(blamed(&d).map(|s| s.sig), Some(9));
    assert_eq!(classify(&facts(Some(d), 137)), Cause::RuntimeStop);
    let shim = signal(9, 902, "containerd-shim", 90 * S);
    assert_eq!(
        classify(&facts(Some(death(50, 9, shim, shim)), 137)),
        Cause::RuntimeStop
    );
}

#[test]
fn a_sigterm_answered_by_its_own_exit_is_blamed_on_its_sender() {
    let term = signal(15, 4242, "bash", 99 * S);
    let d = death(50, 143 << 8, term, term);
    assert_eq!(blamed(&d).map(|s| s.sender_tgid), Some(4242));
    assert_eq!(classify(&facts(Some(d), 143)), Cause::NodeProcess);
    // Long ago: the exit is its own.
    let old = signal(15, 4242, "bash", 1);
    let mut d = death(50, 0, old, old);
    d.ktime_ns = 1000 * S;
    assert_eq!(classify(&facts(Some(d), 0)), Cause::Exited);
}

#[test]
fn a_fault_or_an_abort_in_the_process_itself_is_a_crash() {
    let segv = signal(11, 50, "app", 99 * S);
    assert_eq!(
        classify(&facts(Some(death(50, 11 | 0x80, segv, segv)), 139)),
        Cause::Crash
    );
    // The same signal from elsewhere is that sender's.
    let sent = signal(11, 4242, "bash", 99 * S);
    assert_eq!(
        classify(&facts(Some(death(50, 11, sent, sent)), 139)),
        Cause::NodeProcess
    );
}

#[test]
fn userspace_oom_killers_by_name_or_by_oomd_s_mark() {
    let e = signal(9, 300, "earlyoom", 99 * S);
    assert_eq!(
        classify(&facts(Some(death(50, 9, e, e)), 137)),
        Cause::OomKillerUserspace
    );
    let o = signal(9, 301, "something", 99 * S);
    let mut f = facts(Some(death(50, 9, o, o)), 137);
    f.oomd_marked = true;
    assert_eq!(classify(&f), Cause::OomKillerUserspace);
}

#[test]
fn an_oomd_mark_does_not_outrank_the_runtime_or_explain_a_sigterm() {
    // The pod's cgroup keeps an earlier kill's mark; this container's end was a stop.
    let r = signal(9, 302, "runc", 99 * S);
    let mut f = facts(Some(death(50, 9, r, r)), 137);
    f.oomd_marked = true;
    assert_eq!(classify(&f), Cause::RuntimeStop);
    // They kill with SIGKILL: a SIGTERM's sender stays who it is.
    let t = signal(15, 303, "bash", 99 * S);
    let mut f = facts(Some(death(50, 15, t, t)), 143);
    f.oomd_marked = true;
    assert_eq!(classify(&f), Cause::NodeProcess);
}

#[test]
fn a_sender_inside_the_pod_is_a_pod_process() {
    let k = signal(9, 301, "sh", 99 * S);
    let mut f = facts(Some(death(50, 9, k, k)), 137);
    f.pod_cgroup = Some("/kubepods/burstable/podabc".into());
    f.sender_cgroup = Some("/kubepods/burstable/podabc/def".into());
    assert_eq!(classify(&f), Cause::PodProcess);
    f.sender_cgroup = Some("/kubepods/burstable/podother/x".into());
    assert_eq!(classify(&f), Cause::NodeProcess);
}

#[test]
fn the_kubelet_is_wrong_when_an_earlier_taskoom_names_a_later_stop() {
    let v = kubelet_view(Cause::RuntimeStop, 143, true);
    assert_eq!(
        (v.reason, v.wrong),
        ("OOMKilled", Some("oomkilled_not_oom"))
    );
    let v = kubelet_view(Cause::Exited, 0, true);
    assert_eq!(v.wrong, Some("oomkilled_not_oom"));
    let v = kubelet_view(Cause::OomKill, 137, false);
    assert_eq!((v.reason, v.wrong), ("Error", Some("error_for_oom")));
    let v = kubelet_view(Cause::OomKill, 137, true);
    assert_eq!(v.wrong, None);
    assert_eq!(kubelet_view(Cause::Exited, 0, false).reason, "Completed");
}

#[test]
fn units_and_names() {
    assert_eq!(
        unit_of("/system.slice/cron.service").as_deref(),
        Some("cron.service")
    );
    assert_eq!(unit_of("/kubepods/pod1/abc"), None);
    assert_eq!(signal_name(9), "SIGKILL");
    assert_eq!(code_name(-6), "SI_TKILL");
    assert_eq!(comm_str(&comm("runc")), "runc");
}
