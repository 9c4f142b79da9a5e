//! What each hook strategy claims to see (docs/hooks.md), as assertions on events.
//! A field a strategy claims must be right; a field it does not claim must be `null`.

use serde_json::Value;

/// What one strategy sees on this guest's kernel (cgroup v2).
#[derive(Debug, Clone, Copy)]
pub struct Sees {
    /// `oom_control`: the OOM cgroup and the constraint (fentry, kprobe).
    pub oom_control: bool,
    /// The victim's task for every victim, not only when it is the allocating task
    /// (fentry, kprobe, tp_btf: from the tracepoint on 6.8+, else from `oom_control.chosen`
    /// or the SIGKILL the OOM killer sent).
    pub every_victim_task: bool,
    /// Whether the classic tracepoint's own record carries comm and uid (Linux 6.8+).
    pub tp_comm_uid: bool,
}

impl Sees {
    pub fn of(strategy: &str, tp_record_has_comm: bool) -> Sees {
        match strategy {
            "fentry" | "kprobe" => Sees {
                oom_control: true,
                every_victim_task: true,
                tp_comm_uid: tp_record_has_comm,
            },
            "tp_btf" => Sees {
                oom_control: false,
                every_victim_task: true,
                tp_comm_uid: tp_record_has_comm,
            },
            _ => Sees {
                oom_control: false,
                every_victim_task: false,
                tp_comm_uid: tp_record_has_comm,
            },
        }
    }
}

/// Collects assertion failures instead of stopping at the first.
#[derive(Default)]
pub struct Errors(pub Vec<String>);

impl Errors {
    pub fn eq(&mut self, e: &Value, field: &str, got: &Value, want: Value) {
        if *got != want {
            self.0.push(format!(
                "{field}: got {got}, want {want} (event seq {})",
                e["seq"]
            ));
        }
    }
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

/// The victim we know we killed.
pub struct Want<'a> {
    pub pid: u32,
    pub comm: &'a str,
    /// Its cgroup path in the unified hierarchy.
    pub cgroup: &'a str,
}

/// The fields every event carries whatever the hook, and the documented schema.
pub fn common(err: &mut Errors, e: &Value, strategy: &str) {
    for v in tests::schema_violations(e) {
        err.0.push(format!("schema: {v}"));
    }
    err.eq(e, "schema", &e["schema"], 2.into());
    err.eq(e, "event", &e["event"], "oom_kill".into());
    err.eq(e, "hook", &e["hook"], strategy.into());
    err.check(
        e["ktime_ns"].as_u64().is_some_and(|t| t > 0),
        format!("ktime_ns missing: {e}"),
    );
    err.check(
        e["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        format!("time not RFC 3339 UTC: {e}"),
    );
    err.check(
        e["trigger"]["pid"].as_u64().is_some_and(|p| p > 0),
        format!("trigger missing: {e}"),
    );
}

/// The victim object. `is_trigger`: the victim is the task that ran into the OOM, which every
/// hook can read as `current`.
pub fn victim(err: &mut Errors, e: &Value, sees: Sees, want: &Want<'_>, is_trigger: bool) {
    let v = &e["victim"];
    err.eq(e, "victim.pid", &v["pid"], want.pid.into());
    // cgroup v2: there is no separate unified id.
    err.eq(
        e,
        "victim.unified_cgroup_id",
        &v["unified_cgroup_id"],
        Value::Null,
    );
    if sees.every_victim_task || is_trigger {
        err.eq(e, "victim.tgid", &v["tgid"], want.pid.into());
        err.eq(e, "victim.comm", &v["comm"], want.comm.into());
        err.eq(e, "victim.uid", &v["uid"], 0.into());
        err.eq(e, "victim.cgroup", &v["cgroup"], want.cgroup.into());
        err.check(
            v["cgroup_id"].as_u64().is_some_and(|i| i > 1),
            format!("victim.cgroup_id missing: {e}"),
        );
    } else {
        // Only the tracepoint's record: pid, and comm/uid where the kernel puts them in it.
        err.eq(e, "victim.tgid", &v["tgid"], Value::Null);
        err.eq(e, "victim.cgroup", &v["cgroup"], Value::Null);
        err.eq(e, "victim.cgroup_id", &v["cgroup_id"], Value::Null);
        let (comm, uid) = if sees.tp_comm_uid {
            (want.comm.into(), 0.into())
        } else {
            (Value::Null, Value::Null)
        };
        err.eq(e, "victim.comm", &v["comm"], comm);
        err.eq(e, "victim.uid", &v["uid"], uid);
    }
}

/// `oom_cgroup` and `constraint`: `oom_cgroup` is `None` for a global OOM.
pub fn oom(err: &mut Errors, e: &Value, sees: Sees, oom_cgroup: Option<&str>) {
    if !sees.oom_control {
        err.eq(e, "oom_cgroup", &e["oom_cgroup"], Value::Null);
        err.eq(e, "constraint", &e["constraint"], Value::Null);
        return;
    }
    match oom_cgroup {
        Some(path) => {
            err.eq(e, "oom_cgroup.path", &e["oom_cgroup"]["path"], path.into());
            err.check(
                e["oom_cgroup"]["id"].as_u64().is_some_and(|i| i > 1),
                format!("oom_cgroup.id missing: {e}"),
            );
            err.eq(e, "constraint", &e["constraint"], "memcg".into());
        }
        None => {
            err.eq(e, "oom_cgroup", &e["oom_cgroup"], Value::Null);
            err.eq(e, "constraint", &e["constraint"], "global".into());
        }
    }
}

/// Where the limit that fired was, for [`explained`].
pub enum Domain {
    /// A memory cgroup whose `memory.max` the scenario wrote, in bytes.
    Memcg(u64),
    /// The whole guest (global OOM).
    Node,
}

/// The kill explained (issue 14): the OOM domain's counter and size, the incident, the
/// victim's badness, memory, `oom_score_adj` and namespace pid. `has_task`: the hook could
/// read the victim's task (every victim for fentry, kprobe and tp_btf; the allocating task
/// for the tracepoint). `chosen`: this victim is the one the OOM killer chose (not another
/// member of a `memory.oom.group` kill).
pub fn explained(
    err: &mut Errors,
    e: &Value,
    sees: Sees,
    domain: &Domain,
    has_task: bool,
    chosen: bool,
) {
    let d = &e["oom_domain"];
    if sees.oom_control {
        let total = d["total_pages"].as_u64().unwrap_or(0);
        err.check(total > 0, format!("oom_domain.total_pages missing: {e}"));
        match domain {
            Domain::Memcg(limit) => {
                err.eq(
                    e,
                    "oom_domain.limit_bytes",
                    &d["limit_bytes"],
                    (*limit).into(),
                );
                // Read at each victim's mark: the chosen one sees the usage that hit the
                // limit; later victims of a group kill see what the earlier ones freed.
                let usage = d["usage_bytes"].as_u64().unwrap_or(u64::MAX);
                let margin = if chosen { 4 << 20 } else { *limit };
                err.check(
                    usage <= *limit && usage + margin >= *limit,
                    format!("oom_domain.usage_bytes {usage} not within {margin} bytes of the limit {limit}: {e}"),
                );
                err.check(
                    d["swap_usage_bytes"].as_u64().is_some(),
                    format!("oom_domain.swap_usage_bytes missing on cgroup v2: {e}"),
                );
                err.eq(e, "limit", &e["limit"], "cgroup".into());
            }
            Domain::Node => {
                // The node's totals: the domain is all of RAM and swap.
                err.eq(
                    e,
                    "oom_domain.limit_bytes",
                    &d["limit_bytes"],
                    (total * 4096).into(),
                );
                err.eq(e, "limit", &e["limit"], "node".into());
                // Reading the arguments would pin the victim's memory in the middle of the
                // OOM (the kernel then panics here, with nothing else killable).
                err.eq(e, "victim.cmdline", &e["victim"]["cmdline"], Value::Null);
            }
        }
        let inc = &e["incident"];
        err.check(
            inc["id"].as_u64().is_some_and(|i| i > 0)
                && inc["victims"].as_u64().is_some_and(|n| n >= 1),
            format!("incident missing: {e}"),
        );
        let points = &e["victim"]["points"];
        if chosen {
            err.check(
                points.as_i64().is_some(),
                format!("victim.points missing for the chosen victim: {e}"),
            );
        } else {
            err.eq(e, "victim.points", points, Value::Null);
        }
    } else {
        // cgroup v2 without oom_control: neither the OOM cgroup nor the domain is seen.
        err.eq(e, "oom_domain", d, Value::Null);
        err.eq(e, "incident", &e["incident"], Value::Null);
        err.eq(e, "victim.points", &e["victim"]["points"], Value::Null);
        err.eq(e, "limit", &e["limit"], Value::Null);
    }
    let v = &e["victim"];
    if has_task {
        err.eq(e, "victim.ns_pid", &v["ns_pid"], v["pid"].clone());
        err.eq(e, "victim.oom_score_adj", &v["oom_score_adj"], 0.into());
        let anon = v["memory"]["anon_rss_bytes"].as_u64().unwrap_or(0);
        let most = match domain {
            Domain::Memcg(limit) => *limit,
            Domain::Node => u64::MAX,
        };
        err.check(
            anon > (1 << 20) && anon <= most,
            format!("victim.memory.anon_rss_bytes {anon}: {e}"),
        );
        err.check(
            v["memory"]["pgtables_bytes"]
                .as_u64()
                .is_some_and(|b| b > 0),
            format!("victim.memory.pgtables_bytes missing: {e}"),
        );
        err.check(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("OOM-killed")),
            format!("message missing: {e}"),
        );
    } else {
        err.eq(e, "victim.ns_pid", &v["ns_pid"], Value::Null);
        err.eq(e, "victim.oom_score_adj", &v["oom_score_adj"], Value::Null);
        err.eq(e, "victim.memory", &v["memory"], Value::Null);
    }
    // No container in the guests' kernel scenarios.
    err.eq(e, "container_exits", &e["container_exits"], Value::Null);
}
