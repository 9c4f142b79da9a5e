//! "Was it OOM-killed?", answered synchronously on a Unix socket.
//!
//! Protocol: one JSON request per connection, one JSON answer, both a single line.
//! Request: `{"pid":N}`, `{"container":"ID"}` (optionally with `"namespace"`) or
//! `{"cgroup":"/path"}`. Answer: `{"oom_killed":bool,"kills":[...],"source":"events"|"kernel"}`
//! or `{"error":"..."}`.
//!
//! The answer is right even when asked the instant the victim's exit is visible: the kernel
//! records the kill before the victim can exit, and the daemon drains everything the kernel
//! has recorded before it answers (falling back to the kernel's victim map for a pid).

use std::{
    collections::VecDeque,
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::event::{ContainerRef, Event};

/// Where the daemon answers by default.
pub const DEFAULT_SOCKET: &str = "/run/oom-observer/query.sock";
/// Kills remembered for queries (the kernel's victim map holds more, by pid).
const HISTORY: usize = 16384;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What is asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Query {
    /// A process (thread or process id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Restricts `container` to a containerd namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A cgroup path (in the memory controller's hierarchy); kills in it or below it count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Query {
    fn is_valid(&self) -> bool {
        [
            self.pid.is_some(),
            self.container.is_some(),
            self.cgroup.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            == 1
    }
}

/// The victim's exit, once seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitSeen {
    /// When it exited (RFC 3339).
    pub time: String,
    /// `CLOCK_BOOTTIME` of the exit.
    pub ktime_ns: u64,
    /// The signal that ended it.
    pub signal: Option<i32>,
}

/// One remembered kill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kill {
    /// `seq` of its `oom_kill` event (0 when known only from the kernel's map).
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// `CLOCK_BOOTTIME` of the kill.
    pub ktime_ns: u64,
    /// Victim thread id.
    pub pid: Option<u32>,
    /// Victim process id.
    pub tgid: Option<u32>,
    /// Victim command.
    pub comm: Option<String>,
    /// Victim cgroup path.
    pub cgroup: Option<String>,
    /// The container it was attributed to.
    pub container: Option<ContainerRef>,
    /// The exit, once seen.
    pub exit: Option<ExitSeen>,
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// Whether anything matched.
    pub oom_killed: bool,
    /// The matching kills, oldest first.
    pub kills: Vec<Kill>,
    /// `events` (the daemon's record) or `kernel` (the kernel's victim map).
    pub source: String,
    /// Set instead of the rest when the request could not be answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    fn error(msg: impl Into<String>) -> Answer {
        Answer {
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// Kills seen by this daemon run, newest last.
#[derive(Debug, Default)]
pub struct History {
    kills: VecDeque<Kill>,
}

impl History {
    /// Remembers a kill event.
    pub fn record_kill(&mut self, ev: &Event) {
        let Some(v) = &ev.victim else { return };
        self.kills.push_back(Kill {
            seq: ev.seq,
            time: ev.time.clone(),
            ktime_ns: ev.ktime_ns,
            pid: v.pid,
            tgid: v.tgid,
            comm: v.comm.clone(),
            cgroup: v.cgroup.clone(),
            container: ev.container.clone(),
            exit: None,
        });
        while self.kills.len() > HISTORY {
            self.kills.pop_front();
        }
    }

    /// Pairs an exit with its kill (newest kill of that process); returns the kill.
    pub fn record_exit(&mut self, ev: &Event) -> Option<&Kill> {
        let v = ev.victim.as_ref()?;
        let tgid = v.tgid.or(v.pid)?;
        let k = self
            .kills
            .iter_mut()
            .rev()
            .find(|k| k.exit.is_none() && (k.tgid == Some(tgid) || k.pid == Some(tgid)))?;
        k.exit = Some(ExitSeen {
            time: ev.time.clone(),
            ktime_ns: ev.ktime_ns,
            signal: ev.exit.as_ref().and_then(|e| e.signal),
        });
        Some(k)
    }

    /// Kills matching a query.
    pub fn find(&self, q: &Query) -> Vec<Kill> {
        self.kills
            .iter()
            .filter(|k| {
                if let Some(pid) = q.pid {
                    return k.pid == Some(pid) || k.tgid == Some(pid);
                }
                if let Some(id) = &q.container {
                    return k.container.as_ref().is_some_and(|c| {
                        &c.id == id && q.namespace.as_ref().is_none_or(|ns| &c.namespace == ns)
                    });
                }
                if let Some(cg) = &q.cgroup {
                    let cg = cg.trim_end_matches('/');
                    return k.cgroup.as_deref().is_some_and(|p| {
                        p == cg || p.starts_with(&format!("{cg}/")) || cg.is_empty()
                    });
                }
                false
            })
            .cloned()
            .collect()
    }
}

/// Answers from the history, else (for a pid) from the kernel's victim map via `kernel`.
pub fn answer(history: &History, q: &Query, kernel: impl Fn(u32) -> Option<Kill>) -> Answer {
    if !q.is_valid() {
        return Answer::error("ask about exactly one of pid, container, cgroup");
    }
    let kills = history.find(q);
    if !kills.is_empty() {
        return Answer {
            oom_killed: true,
            kills,
            source: "events".into(),
            error: None,
        };
    }
    if let Some(k) = q.pid.and_then(kernel) {
        return Answer {
            oom_killed: true,
            kills: vec![k],
            source: "kernel".into(),
            error: None,
        };
    }
    Answer {
        oom_killed: false,
        kills: Vec::new(),
        source: "events".into(),
        error: None,
    }
}

/// A query waiting for the main loop.
pub struct Request {
    /// What is asked.
    pub query: Query,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// Errors of the query socket and its client.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Another daemon answers on the socket.
    #[error("another oom-observer already answers on {0}")]
    InUse(String),
    /// The socket could not be set up or reached.
    #[error("query socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The answer was not understood.
    #[error("bad answer from {path}: {reason}")]
    Protocol {
        /// The socket path.
        path: String,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueryError + '_ {
    move |source| QueryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Binds the socket (root-only) and accepts connections in the background; requests come
/// out of the returned channel for the main loop to answer in order with the event stream.
pub async fn serve(path: &Path) -> Result<mpsc::Receiver<Request>, QueryError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(QueryError::InUse(path.display().to_string()));
        }
        fs::remove_file(path).map_err(io_err(path))?;
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    let (tx, rx) = mpsc::channel(64);
    let path_owned: PathBuf = path.to_path_buf();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, tx.clone()));
                }
                Err(e) => {
                    tracing::warn!(socket = %path_owned.display(), error = %e, "query socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(rx)
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<Request>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    // Bounds what one request may send.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(r, 4096));
    let read = tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await;
    let answer = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Query>(line.trim()) {
            Ok(query) => {
                let (reply, rx) = oneshot::channel();
                if tx.send(Request { query, reply }).await.is_err() {
                    Answer::error("daemon is stopping")
                } else {
                    rx.await
                        .unwrap_or_else(|_| Answer::error("daemon is stopping"))
                }
            }
            Err(e) => Answer::error(format!("bad request: {e}")),
        },
        Ok(Err(e)) => Answer::error(format!("reading request: {e}")),
        Err(_) => Answer::error("request timed out"),
    };
    let mut out =
        serde_json::to_vec(&answer).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    out.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, w.write_all(&out)).await;
}

/// Asks a running daemon.
pub async fn ask(path: &Path, q: &Query) -> Result<Answer, QueryError> {
    let mut s = tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| io_err(path)(io::Error::from(io::ErrorKind::TimedOut)))?
        .map_err(io_err(path))?;
    let mut req = serde_json::to_vec(q).map_err(|e| QueryError::Protocol {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    req.push(b'\n');
    s.write_all(&req).await.map_err(io_err(path))?;
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, BufReader::new(s).read_line(&mut line))
        .await
        .map_err(|_| io_err(path)(io::Error::from(io::ErrorKind::TimedOut)))?
        .map_err(io_err(path))?;
    serde_json::from_str(line.trim()).map_err(|e| QueryError::Protocol {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Victim};

    fn ev(seq: u64, kind: &'static str, tgid: u32, cgroup: &str, container: Option<&str>) -> Event {
        Event {
            schema: 1,
            seq,
            event: kind,
            time: "t".into(),
            ktime_ns: seq * 10,
            hook: "tp_btf",
            victim: Some(Victim {
                pid: Some(tgid),
                tgid: Some(tgid),
                comm: Some("x".into()),
                uid: None,
                cgroup_id: Some(1),
                cgroup: Some(cgroup.into()),
                unified_cgroup_id: None,
            }),
            oom_cgroup: None,
            constraint: None,
            trigger: None,
            container: container.map(|id| ContainerRef {
                id: id.into(),
                namespace: "k8s.io".into(),
                name: None,
                runtime: "r".into(),
                pod: None,
            }),
            containers: Vec::new(),
            published: false,
            exit: None,
            kill_seq: None,
        }
    }

    #[test]
    fn finds_by_pid_container_and_cgroup() {
        let mut h = History::default();
        h.record_kill(&ev(1, "oom_kill", 10, "/pod/a", Some("a")));
        h.record_kill(&ev(2, "oom_kill", 11, "/pod/b", None));
        let none = |_| None;
        assert!(
            answer(
                &h,
                &Query {
                    pid: Some(10),
                    ..Default::default()
                },
                none
            )
            .oom_killed
        );
        assert!(
            !answer(
                &h,
                &Query {
                    pid: Some(12),
                    ..Default::default()
                },
                none
            )
            .oom_killed
        );
        let a = answer(
            &h,
            &Query {
                container: Some("a".into()),
                ..Default::default()
            },
            none,
        );
        assert_eq!(a.kills.len(), 1);
        assert_eq!(a.kills[0].seq, 1);
        let wrong_ns = Query {
            container: Some("a".into()),
            namespace: Some("other".into()),
            ..Default::default()
        };
        assert!(!answer(&h, &wrong_ns, none).oom_killed);
        assert_eq!(
            answer(
                &h,
                &Query {
                    cgroup: Some("/pod".into()),
                    ..Default::default()
                },
                none
            )
            .kills
            .len(),
            2
        );
        assert!(
            !answer(
                &h,
                &Query {
                    cgroup: Some("/po".into()),
                    ..Default::default()
                },
                none
            )
            .oom_killed
        );
        assert!(answer(&h, &Query::default(), none).error.is_some());
        let two = Query {
            pid: Some(1),
            cgroup: Some("/".into()),
            ..Default::default()
        };
        assert!(answer(&h, &two, none).error.is_some());
    }

    #[test]
    fn exits_pair_with_their_kill_and_the_kernel_map_is_the_fallback() {
        let mut h = History::default();
        h.record_kill(&ev(1, "oom_kill", 10, "/a", None));
        let mut exit = ev(2, "victim_exit", 10, "/a", None);
        exit.exit = Some(crate::event::ExitInfo::from_status(9));
        assert_eq!(h.record_exit(&exit).map(|k| k.seq), Some(1));
        let a = answer(
            &h,
            &Query {
                pid: Some(10),
                ..Default::default()
            },
            |_| None,
        );
        assert_eq!(a.kills[0].exit.as_ref().unwrap().signal, Some(9));
        let k = |pid: u32| {
            (pid == 99).then(|| Kill {
                seq: 0,
                time: "t".into(),
                ktime_ns: 1,
                pid: Some(99),
                tgid: Some(99),
                comm: None,
                cgroup: None,
                container: None,
                exit: None,
            })
        };
        let a = answer(
            &h,
            &Query {
                pid: Some(99),
                ..Default::default()
            },
            k,
        );
        assert!(a.oom_killed);
        assert_eq!(a.source, "kernel");
    }
}
