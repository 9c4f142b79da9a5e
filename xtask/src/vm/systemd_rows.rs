//! The systemd guest's kubelet rows (`cargo xtask systemd-guest --pods N`) in the results
//! pages: merged into docs/kubelet.json beside the other rows, and one section of
//! docs/kubelet.md per containerd release, between markers, so that neither this command nor
//! `cargo xtask kubelet` (which writes the rest of the page) drops the other's rows.

use std::fs;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::command::root;

/// Around all the systemd driver's sections of docs/kubelet.md.
const BEGIN: &str = "<!-- systemd-rows: begin -->";
const END: &str = "<!-- systemd-rows: end -->";

/// What the section starts with, once.
const HEAD: &str = "## The systemd cgroup driver: a guest whose PID 1 is systemd

The same rows in the guest of `cargo xtask systemd-guest` (docs/reliability.md, \"Under a real
systemd\"): Debian 12's systemd 252 as PID 1, containerd as its `containerd.service` with
`SystemdCgroup = true`, each pod's cgroup parent the slice a kubelet with the systemd driver
names (`kubepods-burstable-pod<uid>.slice`, its `MemoryMax=` set through systemd), so systemd
makes the slices and each container's `cri-containerd-<id>.scope`. \"observer yes\" is
`packaging/oom-observer.service` as shipped, started with `systemctl start` for the row and
stopped after it; \"no\": the unit stopped. Linux 6.12 under qemu TCG, 2 vCPUs: x86_64, or
arm64 where the heading says so (`--arch arm64`).
The loads are the ones above; the starved CPU's busy loops are in a scratch cgroup at the top
(CPU weight 10000), and `kubepods.slice` gets CPU weight 1000, a tenth of it (no kubelet runs to
set it; at systemd's default 100 the pods got a hundredth of the starved CPU, and no loaded
kill came within the harness's 30 s), as the pods have a tenth of the busy loops' weight on
the nodes without systemd. The bench's busy threads run in the harness's own unit. After it
lets a batch of pods go, the harness waits up to 30 s for each kill in the idle rows and up to
90 s in the loaded ones. A container whose kill has not come by then is never read: it
counts as `other` and as not 137, and is listed with its events.
";

fn markers(release: &str) -> (String, String) {
    (
        format!("<!-- systemd-rows {release}: begin -->"),
        format!("<!-- systemd-rows {release}: end -->"),
    )
}

/// `page` with the section of `release` set to `body` (added if the page has none).
pub fn with_section(page: &str, release: &str, body: &str) -> String {
    let (b, e) = markers(release);
    let section = format!("{b}\n{body}\n{e}");
    if let (Some(i), Some(j)) = (page.find(&b), page.find(&e)) {
        return format!("{}{section}{}", &page[..i], &page[j + e.len()..]);
    }
    if let Some(j) = page.find(END) {
        return format!("{}{section}\n\n{}", &page[..j], &page[j..]);
    }
    let all = format!("{BEGIN}\n{HEAD}\n{section}\n\n{END}\n");
    // Before the page's closing gVisor section, or at its end.
    match page.find("\n## gVisor") {
        Some(i) => format!("{}{all}\n{}", &page[..i + 1], &page[i + 1..]),
        None => format!("{}\n{all}", page.trim_end()),
    }
}

/// The systemd sections of `old` carried into `new` (a page `cargo xtask kubelet` wrote
/// afresh), before its gVisor section.
pub fn carry_over(old: &str, new: &str) -> String {
    let (Some(i), Some(j)) = (old.find(BEGIN), old.find(END)) else {
        return new.to_string();
    };
    let all = &old[i..j + END.len()];
    match new.find("\n## gVisor") {
        Some(k) => format!("{}{all}\n\n{}", &new[..k + 1], &new[k + 1..]),
        None => format!("{}\n\n{all}\n", new.trim_end()),
    }
}

/// The systemd driver's rows of a kubelet.json.
pub fn systemd_rows(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter(|r| r["cgroup_driver"] == "systemd")
        .cloned()
        .collect()
}

/// Writes the guest's `kubelet` verdict `v` into docs/kubelet.json (replacing the systemd
/// rows of the same release and architecture) and docs/kubelet.md (the release's section).
pub fn write_docs(v: &Value, release: &str, intro: &str) -> Result<()> {
    let docs = root().join("docs");
    let json_path = docs.join("kubelet.json");
    let mut rows: Vec<Value> = serde_json::from_str(
        &fs::read_to_string(&json_path).context("reading docs/kubelet.json")?,
    )?;
    let new: Vec<Value> = v["rows"].as_array().cloned().unwrap_or_default();
    let same = |r: &Value| {
        r["cgroup_driver"] == "systemd"
            && r["containerd"] == release
            && new.iter().any(|n| n["arch"] == r["arch"])
    };
    rows.retain(|r| !same(r));
    rows.extend(new.iter().cloned());
    fs::write(&json_path, serde_json::to_string_pretty(&rows)? + "\n")?;

    let md_path = docs.join("kubelet.md");
    let page = fs::read_to_string(&md_path).context("reading docs/kubelet.md")?;
    // The x86_64 guest's sections are keyed by the release alone (as before arm64 had any).
    let arch = new
        .first()
        .and_then(|r| r["arch"].as_str())
        .unwrap_or("x86_64");
    let (key, heading) = if arch == "x86_64" {
        (
            release.to_string(),
            format!("containerd {release}, systemd driver"),
        )
    } else {
        (
            format!("{release} {arch}"),
            format!("containerd {release}, systemd driver, {arch}"),
        )
    };
    let mut body = format!("### {heading}\n\n{intro}\n\n");
    body += v["table"].as_str().unwrap_or("No table.\n");
    if let Some(p) = v["problems"].as_array().filter(|p| !p.is_empty()) {
        let p: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
        body += &format!("\n**Problems:** {}\n", p.join("; "));
    }
    fs::write(&md_path, with_section(&page, &key, body.trim_end()))?;
    eprintln!(
        "xtask: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_added_once_and_replaced_after() {
        let page = "# Page\n\n## Host\n\nrows\n\n## gVisor\n\ntext\n";
        let one = with_section(page, "1.6.20", "first");
        assert!(one.contains("rows\n\n<!-- systemd-rows: begin -->"));
        assert!(one.ends_with("## gVisor\n\ntext\n"));
        let two = with_section(&one, "1.6.20", "second");
        assert!(!two.contains("first") && two.matches("second").count() == 1);
        let three = with_section(&two, "2.1.9", "other");
        assert!(three.contains("second") && three.contains("other"));
        assert_eq!(three.matches(HEAD).count(), 1);
        // A page written afresh gets the sections back.
        let fresh = carry_over(&three, page);
        assert!(fresh.contains("second") && fresh.contains("other"));
        assert!(fresh.ends_with("## gVisor\n\ntext\n"));
    }
}
