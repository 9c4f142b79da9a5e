//! Unit tests of `processor`.

use std::{cell::RefCell, io::Write, rc::Rc};

use super::*;
use crate::{host::cgroupfs::CgroupMounts, sinks::json::JsonLines};
use observer_common::Plain;

/// What the JSON sink wrote, readable while the processor holds the sink.
#[derive(Clone, Default)]
struct Written(Rc<RefCell<Vec<u8>>>);

impl Write for Written {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A processor whose only sink is the JSON lines, written to memory.
fn processor(cg: CgroupMounts) -> (Processor, Written) {
    let out = Written::default();
    let p = Processor::new(
        CgroupPaths::start(cg),
        vec![Box::new(JsonLines::new(out.clone()))],
    );
    (p, out)
}

#[tokio::test]
async fn learns_paths_from_mkdir_records_and_counts_malformed() {
    let cg = CgroupMounts::from_texts(
        "30 25 0:27 / /nonexistent-for-test rw - cgroup cgroup rw,memory\n",
        "memory\t4\t1\t1\n",
    );
    let (mut p, _) = processor(cg);
    let m = crate::kernel::record::mkdir_record(4, 99, b"/xy");
    p.handle(m.as_bytes()).await.unwrap();
    assert_eq!(p.paths.cache.get(4, 99), Some("/xy"));
    p.handle(&[200, 0, 0, 0]).await.unwrap();
    assert_eq!(p.malformed, 1);
    assert_eq!(p.seq(), 0, "mkdir and malformed records are not events");
}

fn record(kind: RecordKind, incident: u64) -> OomKillRecord {
    let mut r: OomKillRecord = OomKillRecord::read_from(&[0u8; 256]).unwrap();
    r.kind = kind as u32;
    r.hook = observer_common::Hook::Fentry as u32;
    r.ktime_ns = incident + 1000;
    r.valid = valid::VICTIM_PID
        | valid::VICTIM_TGID
        | valid::VICTIM_COMM
        | valid::INCIDENT
        | valid::DOUBT;
    r.victim_pid = 4242;
    r.victim_tgid = 4242;
    r.victim_comm[..3].copy_from_slice(b"hog");
    r.detail.incident_id = incident;
    r
}

fn lines(out: &Written) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.0.borrow())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A decision writes no line; its kill's line carries its time; a decision the kernel
/// did not carry out is one `oom_kill_skipped` line, named from the decision (the record
/// from oom_kill_process' return carries only the pid), in the same gap-free sequence.
#[tokio::test]
async fn decisions_settle_into_one_kill_line_or_one_skipped_line() {
    let cg = CgroupMounts::from_texts(
        "30 25 0:27 / /nonexistent-for-test rw - cgroup2 cgroup2 rw\n",
        "",
    );
    let (mut p, out) = processor(cg);
    p.handle(record(RecordKind::OomDecision, 100).as_bytes())
        .await
        .unwrap();
    assert!(lines(&out).is_empty(), "a decision alone writes nothing");
    p.handle(record(RecordKind::OomKill, 100).as_bytes())
        .await
        .unwrap();
    let v = lines(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["event"], "oom_kill");
    assert_eq!(v[0]["decided_ktime_ns"], 100);
    assert!(p.decisions.is_empty(), "the kill settled its decision");

    p.handle(record(RecordKind::OomDecision, 200).as_bytes())
        .await
        .unwrap();
    let mut ret = record(RecordKind::OomSkipped, 200);
    ret.valid = valid::VICTIM_PID | valid::INCIDENT;
    ret.victim_comm = [0; observer_common::COMM_LEN];
    p.handle(ret.as_bytes()).await.unwrap();
    let v = lines(&out);
    assert_eq!(v.len(), 2);
    assert_eq!(v[1]["event"], "oom_kill_skipped");
    assert_eq!(v[1]["seq"], 2);
    assert_eq!(v[1]["victim"]["comm"], "hog", "named from the decision");
    assert_eq!(v[1]["decided_ktime_ns"], 200);
    assert_eq!(v[1]["published"], false);
    assert!(p.decisions.is_empty());
}
