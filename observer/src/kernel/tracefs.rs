//! Finding tracefs and reading tracepoint record layouts from it.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use super::error::KernelError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs directory, mounting tracefs at `/sys/kernel/tracing` when nothing provides
/// it (a bare node or an initramfs). Classic tracepoints cannot attach without it.
pub fn ensure_mounted() -> Result<PathBuf, KernelError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| KernelError::TracefsMount {
        target: target.to_path_buf(),
        source,
    })?;
    tracing::info!(path = %target.display(), "mounted tracefs");
    find().ok_or_else(|| KernelError::TracefsEmpty(target.to_path_buf()))
}

/// The tracefs directory, if one is mounted.
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Field name → byte offset of a tracepoint's record, from its `format` file.
pub fn field_offsets(tracefs: &Path, category: &str, name: &str) -> Option<HashMap<String, u32>> {
    let text = fs::read_to_string(
        tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()?;
    Some(parse_format(&text))
}

/// Parses a tracefs `format` file: `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;` lines.
pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';').map(str::trim);
        let Some(decl) = parts.next() else { continue };
        let Some(off) = parts
            .find_map(|p| p.strip_prefix("offset:"))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        // The name is the last word of the declaration, without any array suffix.
        let Some(last) = decl.split_whitespace().last() else {
            continue;
        };
        let name = last.split('[').next().unwrap_or(last);
        out.insert(name.to_string(), off);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mark_victim_format_of_6_18() {
        let text = "name: mark_victim\nID: 609\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;\n\nprint fmt: \"pid=%d\"";
        let f = parse_format(text);
        assert_eq!(f.get("pid"), Some(&8));
        assert_eq!(f.get("comm"), Some(&12));
        assert_eq!(f.get("uid"), Some(&48));
        assert_eq!(f.get("common_type"), Some(&0));
        assert!(!f.contains_key("fmt"));
    }

    #[test]
    fn parses_old_mark_victim_format_with_only_pid() {
        let text = "format:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let f = parse_format(text);
        assert_eq!(f.len(), 1);
        assert_eq!(f["pid"], 8);
    }

    #[test]
    fn parses_array_fields() {
        let f = parse_format("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n");
        assert_eq!(f["comm"], 8);
    }
}
