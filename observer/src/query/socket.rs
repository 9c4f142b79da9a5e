//! The query socket: one JSON line in, one out, on a root-only Unix socket.

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::history::{Answer, Query};

/// Where the daemon answers by default.
pub const DEFAULT_SOCKET: &str = "/run/oom-observer/query.sock";
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. Beyond it the oldest is closed to make room: a real query
/// is answered in a millisecond, so the oldest is almost surely one that sends nothing,
/// and a flood of idle connections can neither exhaust the daemon's descriptors nor hold
/// a real question back.
pub const MAX_CONNECTIONS: usize = 64;
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
    /// Something that is not a socket is at the path: it is not ours to remove.
    #[error(
        "query socket {0}: the path holds something that is not a socket; refusing to replace it"
    )]
    NotASocket(String),
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
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(QueryError::InUse(path.display().to_string()));
            }
            // A stale socket a previous run left: nobody answers on it.
            fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(_) => return Err(QueryError::NotASocket(path.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    let (tx, rx) = mpsc::channel(64);
    let path_owned: PathBuf = path.to_path_buf();
    tokio::spawn(async move {
        let mut open: std::collections::VecDeque<tokio::task::AbortHandle> = Default::default();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    open.retain(|h| !h.is_finished());
                    while open.len() >= MAX_CONNECTIONS {
                        if let Some(oldest) = open.pop_front() {
                            oldest.abort();
                        }
                    }
                    open.push_back(tokio::spawn(handle(stream, tx.clone())).abort_handle());
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
