//! The OCI archives `oci-archive` writes, imported by a real containerd (`ctr images import`)
//! and run with real runc: what the image tests and `cargo xtask image` rely on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is how a test fails"
)]

use std::fs;

use oci_archive::{write_oci_archive, Entry, Image, Platform};
use tests::containerd::Containerd;

/// A busybox image for `platform`: the host's busybox for the host, a stand-in elsewhere
/// (never run: the other platform's manifest must only be importable).
fn busybox(platform: Platform, marker: &str) -> Image {
    let host = platform == Platform::host();
    let busybox = if host {
        fs::read("/bin/busybox").expect("reading /bin/busybox (Debian's busybox-static)")
    } else {
        b"not for this machine".to_vec()
    };
    Image {
        platform,
        entries: vec![
            Entry::file("/bin/busybox", busybox, 0o755),
            Entry::symlink("/bin/sh", "busybox"),
            Entry::symlink("/bin/cat", "busybox"),
            Entry::file("/etc/marker", marker, 0o644),
            Entry::dir("/proc"),
            Entry::dir("/sys"),
            Entry::dir("/dev"),
            Entry::dir("/tmp"),
        ],
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["cat /etc/marker; echo \" $GREETING\"".into()],
        env: vec!["PATH=/bin".into(), "GREETING=from-the-config".into()],
    }
}

fn ok(out: &std::process::Output, what: &str, cd: &Containerd) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cd.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn multi_arch_archive_imports_and_runs_with_its_config() {
    let cd = Containerd::start();
    let archive = cd.dir.join("busybox.oci.tar");
    let name = "oomx.test/busybox:multi";
    write_oci_archive(
        &archive,
        name,
        &[
            busybox(Platform::linux("amd64"), "multi-amd64"),
            busybox(Platform::linux("arm64"), "multi-arm64"),
        ],
    )
    .unwrap();
    let out = cd.ctr(&["images", "import", archive.to_str().unwrap()]);
    ok(&out, "ctr images import", &cd);
    let ls = ok(&cd.ctr(&["images", "ls"]), "ctr images ls", &cd);
    let line = ls
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} not listed after the import:\n{ls}"));
    assert!(
        line.contains("linux/amd64") && line.contains("linux/arm64"),
        "one image name for both platforms: {line}"
    );
    assert!(
        line.contains("application/vnd.oci.image.index.v1+json"),
        "a multi-arch index: {line}"
    );
    // Entrypoint, Cmd and Env from the config; this machine's platform unpacked.
    // Under the containerd's own cgroup parent, removed when it drops (ctr's default cgroup,
    // `/<namespace>/<id>`, would be left behind).
    let cg = cd.cgroup_of("oci-archive-multi");
    let out = cd.ctr(&["run", "--rm", "--cgroup", &cg, name, "oci-archive-multi"]);
    let stdout = ok(&out, "ctr run", &cd);
    let arch = Platform::host().architecture;
    assert_eq!(stdout.trim(), format!("multi-{arch} from-the-config"));
}

#[test]
fn single_image_archive_imports_under_its_name() {
    let cd = Containerd::start();
    let archive = cd.dir.join("single.oci.tar");
    let name = "oomx.test/busybox:single";
    write_oci_archive(&archive, name, &[busybox(Platform::host(), "single")]).unwrap();
    ok(
        &cd.ctr(&["images", "import", archive.to_str().unwrap()]),
        "ctr images import",
        &cd,
    );
    let cg = cd.cgroup_of("oci-archive-single");
    let out = cd.ctr(&["run", "--rm", "--cgroup", &cg, name, "oci-archive-single"]);
    assert_eq!(ok(&out, "ctr run", &cd).trim(), "single from-the-config");
    // A second import of the same bytes changes nothing (same digests).
    let before = ok(&cd.ctr(&["images", "ls"]), "ctr images ls", &cd);
    ok(
        &cd.ctr(&["images", "import", archive.to_str().unwrap()]),
        "second import",
        &cd,
    );
    let after = ok(&cd.ctr(&["images", "ls"]), "ctr images ls", &cd);
    assert_eq!(before, after);
}
