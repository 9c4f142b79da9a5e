//! An error's causes, read through its chain of sources: one line for logs and the terminal,
//! and the errno behind it. A leaf: every layer uses it, and it uses nothing of the crate.

use std::io;

/// The errno behind an error, looking through its chain of sources.
pub fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = e.source();
    }
    None
}

/// One line: the error and its sources, joined, so logs and the terminal get the cause.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Outer(#[source] io::Error);

    #[test]
    fn the_chain_joins_each_cause_once() {
        let e = Outer(io::Error::from_raw_os_error(nix::libc::EPERM));
        let line = chain(&e);
        assert!(line.starts_with("cannot start: "), "{line}");
        assert_eq!(line.matches("cannot start").count(), 1, "{line}");
    }

    #[test]
    fn the_errno_is_found_below_the_top() {
        let e = Outer(io::Error::from_raw_os_error(nix::libc::EACCES));
        assert_eq!(errno_of(&e), Some(nix::libc::EACCES));
        assert_eq!(errno_of(&Outer(io::Error::other("no errno"))), None);
    }
}
