use std::{collections::BTreeMap, io::Read};

use super::*;

/// The archive's members: path → (entry type, mode, mtime, bytes).
fn members(bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, u32, u64, Vec<u8>)> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if h.entry_type() == tar::EntryType::Symlink {
            data = e
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .as_bytes()
                .to_vec();
        }
        out.insert(
            path,
            (h.entry_type(), h.mode().unwrap(), h.mtime().unwrap(), data),
        );
    }
    out
}

fn blob(m: &BTreeMap<String, (tar::EntryType, u32, u64, Vec<u8>)>, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = m
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} missing"))
        .3
        .clone();
    assert_eq!(
        sha256(&data),
        digest,
        "blob content does not match its name"
    );
    data
}

fn json_blob(m: &BTreeMap<String, (tar::EntryType, u32, u64, Vec<u8>)>, desc: &Value) -> Value {
    let data = blob(m, desc["digest"].as_str().unwrap());
    assert_eq!(
        desc["size"].as_u64().unwrap(),
        data.len() as u64,
        "size of {desc}"
    );
    serde_json::from_slice(&data).unwrap()
}

fn image(arch: &str) -> Image {
    Image {
        platform: Platform::linux(arch),
        entries: vec![
            Entry::file("/bin/busybox", format!("busybox for {arch}"), 0o755),
            Entry::symlink("/bin/sh", "busybox"),
            Entry::dir("/tmp"),
            Entry {
                path: "etc/passwd".into(),
                kind: EntryKind::File(b"root:x:0:0::/:/bin/sh\n".to_vec()),
                mode: 0o644,
            },
        ],
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into()],
    }
}

#[test]
fn one_image_is_a_manifest_in_index_json_with_both_names() {
    let bytes =
        oci_archive_bytes("example.com/t:1", &[image("amd64")], &Options::default()).unwrap();
    let m = members(&bytes);
    assert_eq!(m["oci-layout"].3, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Value = serde_json::from_slice(&m["index.json"].3).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media_type::INDEX);
    let descs = index["manifests"].as_array().unwrap();
    assert_eq!(descs.len(), 1);
    let d = &descs[0];
    assert_eq!(d["mediaType"], media_type::MANIFEST);
    assert_eq!(d["annotations"][ANNOTATION_REF_NAME], "example.com/t:1");
    assert_eq!(
        d["annotations"][ANNOTATION_CONTAINERD_NAME],
        "example.com/t:1"
    );
    assert_eq!(d["platform"]["architecture"], "amd64");
    assert_eq!(d["platform"]["os"], "linux");

    let manifest = json_blob(&m, d);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["config"]["mediaType"], media_type::CONFIG);
    let config = json_blob(&m, &manifest["config"]);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Entrypoint"], json!(["/bin/sh"]));
    assert_eq!(config["config"]["Cmd"], json!(["-c", "echo hi"]));
    assert_eq!(config["config"]["Env"], json!(["PATH=/bin"]));
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], media_type::LAYER_TAR);
    let layer = blob(&m, layers[0]["digest"].as_str().unwrap());
    // Uncompressed: the diff id is the layer's own digest.
    assert_eq!(config["rootfs"]["diff_ids"], json!([sha256(&layer)]));
    let files = members(&layer);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/busybox",
            "bin/sh",
            "etc/",
            "etc/passwd",
            "tmp/"
        ]
    );
    assert_eq!(files["bin/busybox"].0, tar::EntryType::Regular);
    assert_eq!(files["bin/busybox"].1, 0o755);
    assert_eq!(files["bin/busybox"].3, b"busybox for amd64");
    assert_eq!(files["bin/sh"].0, tar::EntryType::Symlink);
    assert_eq!(files["bin/sh"].3, b"busybox");
    assert_eq!(files["bin/"].0, tar::EntryType::Directory);
    assert_eq!(files["etc/passwd"].1, 0o644);
    assert!(files.values().all(|f| f.2 == 0), "every mtime is fixed");
}

#[test]
fn parents_come_before_their_children_in_the_layer() {
    let img = Image {
        entries: vec![Entry::file("/usr/bin/oom-observer", "x", 0o755)],
        ..image("amd64")
    };
    let bytes = layer(&img, 0).unwrap();
    let mut ar = tar::Archive::new(&bytes[..]);
    let order: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(order, ["usr/", "usr/bin/", "usr/bin/oom-observer"]);
}

#[test]
fn several_images_are_one_multi_arch_index() {
    let bytes = oci_archive_bytes(
        "oom-observer:dev",
        &[image("amd64"), image("arm64")],
        &Options::default(),
    )
    .unwrap();
    let m = members(&bytes);
    let index: Value = serde_json::from_slice(&m["index.json"].3).unwrap();
    let descs = index["manifests"].as_array().unwrap();
    assert_eq!(descs.len(), 1, "one image name, not one per platform");
    let top = &descs[0];
    assert_eq!(top["mediaType"], media_type::INDEX);
    assert_eq!(
        top["annotations"][ANNOTATION_CONTAINERD_NAME],
        "oom-observer:dev"
    );
    assert_eq!(top["annotations"][ANNOTATION_REF_NAME], "oom-observer:dev");
    let nested = json_blob(&m, top);
    let per_arch = nested["manifests"].as_array().unwrap();
    let archs: Vec<&str> = per_arch
        .iter()
        .map(|d| d["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for d in per_arch {
        let arch = d["platform"]["architecture"].as_str().unwrap();
        let manifest = json_blob(&m, d);
        let config = json_blob(&m, &manifest["config"]);
        assert_eq!(config["architecture"], arch);
        let layer = blob(&m, manifest["layers"][0]["digest"].as_str().unwrap());
        assert_eq!(
            members(&layer)["bin/busybox"].3,
            format!("busybox for {arch}").as_bytes(),
            "each platform's manifest carries its own layer"
        );
    }
}

#[test]
fn output_is_byte_for_byte_reproducible() {
    let imgs = [image("amd64"), image("arm64")];
    for gzip in [false, true] {
        let opts = Options {
            gzip,
            ..Options::default()
        };
        let a = oci_archive_bytes("r:1", &imgs, &opts).unwrap();
        let b = oci_archive_bytes("r:1", &imgs, &opts).unwrap();
        assert!(a == b, "two writes differ (gzip {gzip})");
    }
    let dir = std::env::temp_dir().join(format!("oci-archive-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let (p1, p2) = (dir.join("a.tar"), dir.join("b.tar"));
    write_oci_archive(&p1, "r:1", &imgs).unwrap();
    write_oci_archive(&p2, "r:1", &imgs).unwrap();
    assert_eq!(fs::read(&p1).unwrap(), fs::read(&p2).unwrap());
    assert_eq!(
        fs::read(&p1).unwrap(),
        oci_archive_bytes("r:1", &imgs, &Options::default()).unwrap()
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn gzip_layers_decompress_to_their_diff_id() {
    let opts = Options {
        gzip: true,
        mtime: 1_700_000_000,
        ..Options::default()
    };
    let bytes = oci_archive_bytes("r:1", &[image("arm64")], &opts).unwrap();
    let m = members(&bytes);
    let index: Value = serde_json::from_slice(&m["index.json"].3).unwrap();
    let manifest = json_blob(&m, &index["manifests"][0]);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        media_type::LAYER_TAR_GZIP
    );
    let config = json_blob(&m, &manifest["config"]);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let gz = blob(&m, manifest["layers"][0]["digest"].as_str().unwrap());
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut layer)
        .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&layer).as_str());
    assert!(members(&layer).values().all(|f| f.2 == 1_700_000_000));
    assert!(m.values().all(|f| f.2 == 1_700_000_000));
}

#[test]
fn deep_paths_and_long_symlinks_survive() {
    let deep = format!("/{}/file", ["d123456789"; 20].join("/"));
    let target = "t".repeat(150);
    let img = Image {
        entries: vec![
            Entry::file(deep.clone(), "deep", 0o600),
            Entry::symlink("/l", target.clone()),
        ],
        ..image("amd64")
    };
    let files = members(&layer(&img, 0).unwrap());
    assert_eq!(files[deep.trim_start_matches('/')].3, b"deep");
    assert_eq!(files[deep.trim_start_matches('/')].1, 0o600);
    assert_eq!(files["l"].3, target.as_bytes());
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let err = |imgs: &[Image], r: &str| {
        oci_archive_bytes(r, imgs, &Options::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(&[], "r:1"), "an OCI archive needs at least one image");
    assert_eq!(
        err(&[image("amd64")], ""),
        "the image reference name is empty"
    );
    assert_eq!(
        err(&[image("amd64"), image("amd64")], "r:1"),
        "two images for linux/amd64"
    );
    for (path, why) in [
        ("/../etc/passwd", "leaves the image's root (..)"),
        ("/", "names no file (empty or the root)"),
        ("", "names no file (empty or the root)"),
    ] {
        let img = Image {
            entries: vec![Entry::file(path, "x", 0o644)],
            ..image("amd64")
        };
        assert_eq!(
            err(&[img], "r:1"),
            format!("bad path in image amd64: {path:?}: {why}")
        );
    }
    let twice = Image {
        entries: vec![Entry::file("/a", "1", 0o644), Entry::file("a", "2", 0o644)],
        ..image("amd64")
    };
    assert!(err(&[twice], "r:1").contains("appears twice"));
    // A file where a directory is needed.
    let clash = Image {
        entries: vec![
            Entry::file("/a", "1", 0o644),
            Entry::file("/a/b", "2", 0o644),
        ],
        ..image("amd64")
    };
    assert_eq!(
        err(&[clash], "r:1"),
        "bad path in image amd64: \"/a/b\": a parent is not a directory"
    );
    // An explicit directory that is also a parent is fine.
    let dir_then_file = Image {
        entries: vec![Entry::file("/a/b", "2", 0o644), Entry::dir("/a")],
        ..image("amd64")
    };
    assert!(oci_archive_bytes("r:1", &[dir_then_file], &Options::default()).is_ok());
}

#[test]
fn writing_into_a_missing_directory_names_the_path() {
    let p = Path::new("/nonexistent-oci-archive-dir/x.tar");
    let e = write_oci_archive(p, "r:1", &[image("amd64")]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("writing /nonexistent-oci-archive-dir/x.tar: "),
        "{e}"
    );
}

#[test]
fn goarch_names() {
    assert_eq!(goarch("x86_64"), "amd64");
    assert_eq!(goarch("aarch64"), "arm64");
    assert_eq!(goarch("s390x"), "s390x");
}
