//! OCI image-layout archives, written offline: one tar holding `oci-layout`, `index.json` and
//! `blobs/sha256/…`, the format `ctr images import` (and `docker load`, `podman load`,
//! `skopeo copy oci-archive:`) reads.
//!
//! Each [`Image`] becomes one layer (built from its [`Entry`]s), one config and one manifest.
//! One image: `index.json` lists its manifest. Several: `index.json` lists one image index
//! (a multi-arch index) that lists a manifest per platform, so the archive names one image
//! and each node unpacks its own architecture. The top descriptor carries
//! `org.opencontainers.image.ref.name` and `io.containerd.image.name` (containerd takes the
//! image's name from the latter, so no `--base-name` is needed).
//!
//! The output is a function of the input alone: every timestamp is fixed ([`Options::mtime`]),
//! owners are root, entries keep the caller's order (parents first), JSON keys are sorted.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Media types of the OCI image spec.
pub mod media_type {
    /// An image index (`index.json`, and the nested multi-arch index).
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip-compressed layer.
    pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// The annotation OCI tools read as the image's reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd's importer reads as the image's full name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// What one path in a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target (taken as is, relative or absolute).
    Symlink(String),
}

/// One path in an image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path in the image, absolute or relative to its root (`/usr/bin/x` = `usr/bin/x`).
    pub path: String,
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// Permission bits (e.g. `0o755`); ignored for symlinks (always `0o777`).
    pub mode: u32,
}

impl Entry {
    /// A regular file.
    pub fn file(path: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File(data.into()),
            mode,
        }
    }

    /// A directory (mode 0755).
    pub fn dir(path: impl Into<String>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
        }
    }

    /// A symbolic link.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
        }
    }
}

/// The platform of an image (OCI / Go names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64` or `arm64` (GOARCH names).
    pub architecture: String,
}

impl Platform {
    /// `linux/<architecture>`.
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
        }
    }

    /// The platform of the machine this runs on (Rust's arch name mapped to GOARCH), when it is
    /// one OCI knows by another name or the same.
    pub fn host() -> Platform {
        Platform::linux(goarch(std::env::consts::ARCH))
    }
}

/// GOARCH for a Rust `target_arch` / target triple's first component.
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i586" | "i686" => "386",
        "powerpc64le" => "ppc64le",
        "riscv64" | "riscv64gc" => "riscv64",
        other => other,
    }
}

/// One single-platform image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its platform.
    pub platform: Platform,
    /// Its root filesystem, one layer; missing parent directories are added (mode 0755).
    pub entries: Vec<Entry>,
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Env` (`KEY=value`).
    pub env: Vec<String>,
}

/// How archives are written; [`write_oci_archive`] uses the default (uncompressed, mtime 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Compress each layer with gzip (smaller archive; importing costs a decompression).
    pub gzip: bool,
    /// Modification time of every tar entry, seconds since the epoch (also the config's
    /// `created`).
    pub mtime: u64,
    /// Extra annotations on the top descriptor in `index.json` (and on the nested index).
    pub annotations: Vec<(String, String)>,
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image was given.
    #[error("an OCI archive needs at least one image")]
    NoImages,
    /// The reference name is empty.
    #[error("the image reference name is empty")]
    EmptyRef,
    /// Two images for the same platform (the index could not tell them apart).
    #[error("two images for {os}/{architecture}")]
    DuplicatePlatform {
        /// `os` of both.
        os: String,
        /// `architecture` of both.
        architecture: String,
    },
    /// A path that is empty, leaves the root (`..`), or appears twice.
    #[error("bad path in image {architecture}: {path:?}: {why}")]
    BadPath {
        /// The image's architecture.
        architecture: String,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Writing the archive failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The archive's path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Building a tar stream in memory failed.
    #[error("building a tar stream: {0}")]
    Tar(#[source] io::Error),
}

/// A blob of the layout: its bytes and its descriptor's digest and size.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&bytes),
            bytes,
        }
    }

    fn json(v: &Value) -> Blob {
        // serde_json's Map is a BTreeMap here: the keys come out sorted, always the same bytes.
        Blob::new(serde_json::to_vec(v).unwrap_or_default())
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// One archive: an index with one manifest per image (a multi-arch index when several),
/// annotated `org.opencontainers.image.ref.name` and `io.containerd.image.name` = ref_name.
pub fn write_oci_archive(out: &Path, ref_name: &str, images: &[Image]) -> Result<(), Error> {
    write_oci_archive_with(out, ref_name, images, &Options::default())
}

/// [`write_oci_archive`] with [`Options`].
pub fn write_oci_archive_with(
    out: &Path,
    ref_name: &str,
    images: &[Image],
    opts: &Options,
) -> Result<(), Error> {
    let bytes = oci_archive_bytes(ref_name, images, opts)?;
    let write = |e| Error::Write {
        path: out.to_path_buf(),
        source: e,
    };
    // Written next to the target and renamed: a reader never sees half an archive.
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
        .and_then(|_| fs::rename(&tmp, out));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(write(e));
    }
    Ok(())
}

/// The archive's bytes (what [`write_oci_archive_with`] writes).
pub fn oci_archive_bytes(
    ref_name: &str,
    images: &[Image],
    opts: &Options,
) -> Result<Vec<u8>, Error> {
    if images.is_empty() {
        return Err(Error::NoImages);
    }
    if ref_name.is_empty() {
        return Err(Error::EmptyRef);
    }
    let mut platforms = BTreeSet::new();
    for img in images {
        if !platforms.insert((&img.platform.os, &img.platform.architecture)) {
            return Err(Error::DuplicatePlatform {
                os: img.platform.os.clone(),
                architecture: img.platform.architecture.clone(),
            });
        }
    }
    let mut blobs: Vec<Blob> = Vec::new();
    let mut manifests = Vec::new();
    for img in images {
        let layer_tar = layer(img, opts.mtime)?;
        let diff_id = sha256(&layer_tar);
        let (layer_blob, layer_type) = if opts.gzip {
            (Blob::new(gzip(&layer_tar)?), media_type::LAYER_TAR_GZIP)
        } else {
            (Blob::new(layer_tar), media_type::LAYER_TAR)
        };
        let config = Blob::json(&json!({
            "architecture": img.platform.architecture,
            "os": img.platform.os,
            "created": rfc3339(opts.mtime),
            "config": {
                "Entrypoint": img.entrypoint,
                "Cmd": img.cmd,
                "Env": img.env,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": rfc3339(opts.mtime), "created_by": "oci-archive"}],
        }));
        let manifest = Blob::json(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::MANIFEST,
            "config": config.descriptor(media_type::CONFIG),
            "layers": [layer_blob.descriptor(layer_type)],
        }));
        let mut desc = manifest.descriptor(media_type::MANIFEST);
        desc["platform"] = json!({
            "os": img.platform.os,
            "architecture": img.platform.architecture,
        });
        manifests.push(desc);
        blobs.extend([layer_blob, config, manifest]);
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert(ANNOTATION_REF_NAME.into(), ref_name.into());
    annotations.insert(ANNOTATION_CONTAINERD_NAME.into(), ref_name.into());
    for (k, v) in &opts.annotations {
        annotations.insert(k.clone(), v.clone().into());
    }
    let top = if manifests.len() == 1 {
        let mut desc = manifests.remove(0);
        desc["annotations"] = Value::Object(annotations.clone());
        desc
    } else {
        let nested = Blob::json(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::INDEX,
            "manifests": manifests,
            "annotations": annotations,
        }));
        let mut desc = nested.descriptor(media_type::INDEX);
        desc["annotations"] = Value::Object(annotations.clone());
        blobs.push(nested);
        desc
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::INDEX,
        "manifests": [top],
    }))
    .unwrap_or_default();

    let mut ar = Archive::new(opts.mtime);
    ar.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
    ar.file("index.json", &index, 0o644)?;
    ar.dir("blobs")?;
    ar.dir("blobs/sha256")?;
    let mut written = BTreeSet::new();
    for b in &blobs {
        // Two images may share a blob (the same layer): store it once.
        if written.insert(b.digest.clone()) {
            let hex = b.digest.trim_start_matches("sha256:");
            ar.file(&format!("blobs/sha256/{hex}"), &b.bytes, 0o644)?;
        }
    }
    ar.finish()
}

/// The uncompressed layer tar of an image.
fn layer(img: &Image, mtime: u64) -> Result<Vec<u8>, Error> {
    let bad = |path: &str, why| Error::BadPath {
        architecture: img.platform.architecture.clone(),
        path: path.to_string(),
        why,
    };
    let mut ar = Archive::new(mtime);
    // Path → whether it is a directory.
    let mut seen: std::collections::BTreeMap<String, bool> = Default::default();
    for e in &img.entries {
        let path = clean_path(&e.path).map_err(|why| bad(&e.path, why))?;
        // Parents first, as extractors expect, each once.
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match seen.get(&parent) {
                Some(true) => {}
                Some(false) => return Err(bad(&e.path, "a parent is not a directory")),
                None => {
                    seen.insert(parent.clone(), true);
                    ar.dir(&parent)?;
                }
            }
        }
        let is_dir = e.kind == EntryKind::Dir;
        if let Some(&was_dir) = seen.get(&path) {
            // An explicit directory after one added as a parent is fine; anything else twice
            // would make the layer ambiguous.
            if was_dir && is_dir {
                continue;
            }
            return Err(bad(&e.path, "appears twice"));
        }
        seen.insert(path.clone(), is_dir);
        match &e.kind {
            EntryKind::File(data) => ar.file(&path, data, e.mode)?,
            EntryKind::Dir => ar.dir_mode(&path, e.mode)?,
            EntryKind::Symlink(target) => ar.symlink(&path, target)?,
        }
    }
    ar.finish()
}

/// `a/b/c` from `/a//b/./c/`; refuses empty paths, the root itself and `..`.
fn clean_path(p: &str) -> Result<String, &'static str> {
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("leaves the image's root (..)"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("names no file (empty or the root)");
    }
    Ok(parts.join("/"))
}

/// A tar stream in memory with fixed owners and times.
struct Archive {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Archive {
    fn new(mtime: u64) -> Archive {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Archive { b, mtime }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), Error> {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).map_err(Error::Tar)
    }

    fn dir(&mut self, path: &str) -> Result<(), Error> {
        self.dir_mode(path, 0o755)
    }

    fn dir_mode(&mut self, path: &str, mode: u32) -> Result<(), Error> {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.b
            .append_data(&mut h, format!("{path}/"), io::empty())
            .map_err(Error::Tar)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), Error> {
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).map_err(Error::Tar)
    }

    fn finish(self) -> Result<Vec<u8>, Error> {
        self.b.into_inner().map_err(Error::Tar)
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, Error> {
    // GzEncoder writes no file name and mtime 0 in its header: reproducible.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).map_err(Error::Tar)?;
    enc.finish().map_err(Error::Tar)
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests;
