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
//!
//! [`history`] remembers the kills and answers; [`socket`] serves the protocol.

pub mod history;
pub mod socket;
