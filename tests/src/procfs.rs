//! `/proc/<pid>/status`, read once here for every test: its `Name:\tvalue` lines.

use std::{fs, io};

/// One read of `/proc/<pid>/status`.
pub struct ProcStatus {
    text: String,
}

impl ProcStatus {
    /// Reads the status of `pid`; fails when the process is gone.
    pub fn read(pid: u32) -> io::Result<Self> {
        fs::read_to_string(format!("/proc/{pid}/status")).map(|text| Self { text })
    }

    /// Reads the status of `pid`, or an empty one (every field absent) when it is gone.
    pub fn read_or_empty(pid: u32) -> Self {
        Self::read(pid).unwrap_or(Self {
            text: String::new(),
        })
    }

    /// A field's value, trimmed: `VmRSS` → `"1234 kB"`, `CapEff` → `"000001c0000c0006"`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }

    /// A field's leading number: `VmRSS` → 1234 (kB).
    pub fn number(&self, name: &str) -> Option<u64> {
        self.field(name)?.split_whitespace().next()?.parse().ok()
    }

    /// The lines of the fields in `names`, in the file's order, whitespace collapsed
    /// (`VmHWM: 5120 kB`).
    pub fn lines_of(&self, names: &[&str]) -> Vec<String> {
        self.text
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(name, _)| names.contains(&name))
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ProcStatus;

    fn status(text: &str) -> ProcStatus {
        ProcStatus {
            text: text.to_string(),
        }
    }

    #[test]
    fn fields_numbers_and_lines() {
        let s = status("Name:\toom-observer\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\nCapEff:\t000001c0000c0006\nNoNewPrivs:\t1\n");
        assert_eq!(s.field("Name"), Some("oom-observer"));
        assert_eq!(s.field("CapEff"), Some("000001c0000c0006"));
        assert_eq!(s.field("Cap"), None);
        assert_eq!(s.number("VmRSS"), Some(4096));
        assert_eq!(s.number("VmSwap"), None);
        assert_eq!(
            s.lines_of(&["VmRSS", "VmHWM"]),
            ["VmHWM: 5120 kB", "VmRSS: 4096 kB"]
        );
        assert_eq!(status("").field("VmRSS"), None);
    }
}
