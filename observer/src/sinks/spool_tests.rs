//! Unit tests of `spool`.

use std::time::{Duration, Instant};

use super::writer::{COMPACT_SLACK, PERSIST_EVERY};
use super::*;

fn p(id: &str, t: u64) -> Pending {
    Pending {
        namespace: "n".into(),
        container_id: id.into(),
        ktime_ns: t,
    }
}

fn ids(s: &Spool) -> Vec<u64> {
    s.queue.iter().map(|(_, p)| p.ktime_ns).collect()
}

#[test]
fn survives_a_restart_in_order() {
    let top = tempfile::tempdir().unwrap();
    let d = top.path().join("state");
    let d = d.as_path();
    struct P<'a>(&'a Path);
    impl P<'_> {
        fn path(&self) -> &Path {
            self.0
        }
    }
    let d = P(d);
    {
        let mut s = Spool::open(Some(d.path()));
        assert!(
            !d.path().exists(),
            "nothing is created until something waits"
        );
        s.push(p("a", 1));
        s.push(p("b", 2));
        s.push(p("c", 3));
        assert_eq!(s.pop_front().unwrap().container_id, "a");
        s.sync();
    }
    let mut s = Spool::open(Some(d.path()));
    assert_eq!(s.len(), 2);
    assert_eq!(s.pop_front().unwrap(), p("b", 2));
    assert_eq!(s.pop_front().unwrap(), p("c", 3));
    assert!(s.is_empty());
    s.settle();
    assert!(
        !d.path().join(FILE_NAME).exists(),
        "an empty spool leaves no file"
    );
    let s = Spool::open(Some(d.path()));
    assert!(s.is_empty());
}

#[test]
fn bounded_dropping_oldest_and_counting() {
    let mut s = Spool::open(None);
    for i in 0..(MAX_ENTRIES as u64 + 3) {
        s.push(p("x", i));
    }
    assert_eq!(s.len(), MAX_ENTRIES);
    assert_eq!(s.dropped(), 3);
    assert_eq!(s.front().unwrap().ktime_ns, 3);
}

#[test]
fn full_on_disk_drops_oldest_and_restart_agrees() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open_with_cap(Some(d.path()), 100);
        for i in 0..105 {
            s.push(p("x", i));
        }
        assert_eq!(s.dropped(), 5);
    }
    let s = Spool::open(Some(d.path()));
    assert_eq!(s.len(), 100);
    assert_eq!(s.front().unwrap().ktime_ns, 5);
}

#[test]
fn any_bytes_are_tolerated_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = b"{\"namespace\":\"n\",\"container_id\":\"a\",\"ktime_ns\":1}\n".to_vec();
    bytes.extend_from_slice(b"\xff\xfe\n");
    bytes.extend_from_slice(b"not json\n");
    bytes.extend_from_slice(b"{\"namespace\":\"n\",\"container_id\":\"\",\"ktime_ns\":2}\n");
    bytes.extend_from_slice(b"{\"namespace\":\"n\",\"container_id\":\"b\",\"ktime_ns\":3}\n");
    bytes.extend_from_slice(b"{\"namespace\":\"n\",\"contai"); // torn last write
    fs::write(d.path().join(FILE_NAME), &bytes).unwrap();
    let s = Spool::open(Some(d.path()));
    assert_eq!(
        s.loaded(),
        Loaded {
            entries: 2,
            corrupt: 4
        }
    );
    assert_eq!(ids(&s), vec![1, 3]);
    assert!(
        d.path().join("taskoom-spool.jsonl.corrupt").exists(),
        "the bad file is kept aside"
    );
    drop(s);
    let s = Spool::open(Some(d.path()));
    assert_eq!(
        s.loaded(),
        Loaded {
            entries: 2,
            corrupt: 0
        },
        "rewritten clean"
    );
}

#[test]
fn draining_appends_and_compacts_in_linear_io() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join(FILE_NAME);
    let mut s = Spool::open(Some(d.path()));
    for i in 0..1000 {
        s.push(p("x", i));
    }
    s.settle();
    let full = fs::metadata(&path).unwrap().len();
    let mut max_len = 0;
    for _ in 0..999 {
        s.pop_front().unwrap();
        s.settle();
        let text = fs::read_to_string(&path).unwrap();
        max_len = max_len.max(text.len() as u64);
        // The file never holds more than twice the live entries plus the slack.
        assert!(text.lines().count() <= 2 * s.len().max(COMPACT_SLACK) + 1);
    }
    s.sync();
    assert!(max_len <= full + 1000 * 16, "acks are small appends");
    drop(s);
    let s = Spool::open(Some(d.path()));
    assert_eq!(ids(&s), vec![999], "the file always mirrors the queue");
}

#[test]
fn a_refused_write_keeps_the_entry_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    fs::write(&state, b"a file, not a directory").unwrap();
    let mut s = Spool::open(Some(&state));
    s.push(p("a", 1));
    s.settle();
    assert!(!s.on_disk(), "the disk refused it");
    assert_eq!(s.len(), 1, "but it is queued");
    assert_eq!(s.pop_front().unwrap(), p("a", 1));
    // The directory becomes usable: the writer rewrites the whole queue on its own.
    fs::remove_file(&state).unwrap();
    fs::create_dir(&state).unwrap();
    s.push(p("b", 2));
    let deadline = Instant::now() + 3 * PERSIST_EVERY;
    while !s.on_disk() {
        assert!(Instant::now() < deadline, "never written again");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    assert_eq!(ids(&Spool::open(Some(&state))), vec![2]);
}

#[test]
fn legacy_entries_without_ids_are_numbered() {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join(FILE_NAME),
        "{\"namespace\":\"n\",\"container_id\":\"a\",\"ktime_ns\":1}\n{\"namespace\":\"n\",\"container_id\":\"b\",\"ktime_ns\":2}\n",
    )
    .unwrap();
    let mut s = Spool::open(Some(d.path()));
    assert_eq!(ids(&s), vec![1, 2]);
    s.pop_front().unwrap();
    s.sync();
    drop(s);
    assert_eq!(ids(&Spool::open(Some(d.path()))), vec![2]);
}
