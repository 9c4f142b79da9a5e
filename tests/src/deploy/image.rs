//! The image archive of `cargo xtask image`, read the way containerd reads it.

use std::{collections::BTreeMap, fs, path::Path};

use serde_json::Value;

use crate::deploy::manifest::strs;

/// The members of a tar stream, by path.
pub fn tar_members(r: impl std::io::Read) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        files.insert(path, data);
    }
    files
}

/// One platform's image in an OCI archive: its config and its layers' files, read the way
/// containerd does (index.json → multi-arch index → manifest → config, layers).
pub struct ArchImage {
    pub config: Value,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The image of `arch` in `archive`.
pub fn arch_image(archive: &Path, arch: &str) -> ArchImage {
    let blobs = tar_members(fs::File::open(archive).unwrap());
    let raw = |d: &Value| -> &[u8] {
        let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
        &blobs[&format!("blobs/sha256/{hex}")]
    };
    let json = |d: &Value| -> Value { serde_json::from_slice(raw(d)).unwrap() };
    let mut desc =
        serde_json::from_slice::<Value>(&blobs["index.json"]).unwrap()["manifests"][0].clone();
    while desc["mediaType"] == oci_archive::media_type::INDEX {
        desc = json(&desc)["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} image in the archive"))
            .clone();
    }
    let manifest = json(&desc);
    let mut files = BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let data = raw(l);
        if l["mediaType"] == oci_archive::media_type::LAYER_TAR_GZIP {
            files.extend(tar_members(flate2::read::GzDecoder::new(data)));
        } else {
            files.extend(tar_members(data));
        }
    }
    ArchImage {
        config: json(&manifest["config"]),
        files,
    }
}

/// The Entrypoint and Cmd of the archive's image for this machine's platform.
pub fn image_config(archive: &Path) -> (Vec<String>, Vec<String>) {
    let img = arch_image(archive, &oci_archive::Platform::host().architecture);
    (
        strs(&img.config["config"]["Entrypoint"]),
        strs(&img.config["config"]["Cmd"]),
    )
}
