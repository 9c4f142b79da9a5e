//! `cargo xtask image`: the container image, built offline. The static musl `oom-observer`
//! for x86_64 and arm64 (the VM matrix's own builds, with the `k8s-events` feature) goes into one OCI archive with a
//! multi-arch index, `target/oom-observer-image.oci.tar`, for `ctr images import` (or any OCI
//! tool): no registry, no network, no base image.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};
use oci_archive::{write_oci_archive_with, Entry, Image, Options, Platform};

use crate::{build::build_ebpf, command::root, vm};

/// The image's name: `localhost/` marks a locally built image (no registry), and keeps the
/// CRI from normalizing it to `docker.io/library/…`, so the DaemonSet's `image:` is exactly
/// this.
pub const IMAGE_NAME: &str = concat!("localhost/oom-observer:", env!("CARGO_PKG_VERSION"));
/// Where the archive goes.
pub fn archive_path() -> PathBuf {
    root().join("target/oom-observer-image.oci.tar")
}

/// Builds both binaries and writes the archive; returns its path.
pub fn image() -> Result<PathBuf> {
    let obj = build_ebpf()?;
    let mut images = Vec::new();
    let archs = [vm::Arch::X86_64, vm::Arch::Aarch64];
    for (arch, bins) in archs.into_iter().zip(vm::build_guests(&archs, &obj)?) {
        let binary = fs::read(&bins.observer)
            .with_context(|| format!("reading {}", bins.observer.display()))?;
        images.push(Image {
            platform: Platform::linux(arch.deb()),
            entries: vec![
                Entry::file("/usr/bin/oom-observer", binary, 0o755),
                // Mount points of the DaemonSet's volumes that runc would otherwise have to
                // create in the container's root filesystem (a read-only one cannot).
                Entry::dir("/var/lib/oom-observer"),
                Entry::dir("/run/oom-observer"),
                Entry::dir("/run/containerd"),
                Entry::dir("/tmp"),
                // Where the kubelet mounts the service account's token and CA, which
                // `run --k8s-events` reads (the DaemonSet's in-cluster configuration).
                Entry::dir("/var/run/secrets/kubernetes.io/serviceaccount"),
            ],
            entrypoint: vec!["/usr/bin/oom-observer".into()],
            cmd: vec!["run".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
        });
    }
    let out = archive_path();
    let opts = Options {
        // The two static binaries compress about 3:1; importing costs little.
        gzip: true,
        annotations: vec![
            (
                "org.opencontainers.image.title".into(),
                "oom-observer".into(),
            ),
            (
                "org.opencontainers.image.version".into(),
                env!("CARGO_PKG_VERSION").into(),
            ),
        ],
        ..Options::default()
    };
    write_oci_archive_with(&out, IMAGE_NAME, &images, &opts)?;
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "xtask: wrote {} ({IMAGE_NAME}, linux/amd64 + linux/arm64, {:.1} MiB); import with \
         `ctr -n k8s.io images import {}`",
        out.display(),
        size as f64 / (1 << 20) as f64,
        out.display()
    );
    Ok(out)
}
