//! The manifests of `deploy/kubernetes/`, read as JSON values.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

/// The manifests' folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every document of a YAML file, as JSON values.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: bad YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The YAML files of a folder (not recursive), sorted: the order `kubectl apply -f` uses.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// All objects of the main folder and of `prometheus-operator/`, by `Kind/name`.
pub fn objects() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for dir in [deploy_dir(), deploy_dir().join("prometheus-operator")] {
        for f in yaml_files(&dir) {
            for d in yaml_docs(&f) {
                let key = format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                );
                assert!(out.insert(key.clone(), d).is_none(), "{key} twice");
            }
        }
    }
    out
}

/// The DaemonSet, the object every other one serves.
pub fn daemonset() -> Value {
    objects()
        .remove("DaemonSet/oom-observer")
        .expect("deploy/kubernetes has DaemonSet/oom-observer")
}

/// A path the test needs from `cargo xtask test`, which must exist.
pub fn env_path(var: &str, what: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("THIS TEST NEEDS {var} ({what}): run it with `cargo xtask test`")
    });
    assert!(p.exists(), "{var}={} does not exist", p.display());
    p
}

/// The strings of a JSON array (none when it is not one).
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A Kubernetes memory quantity in bytes (`128Mi`, `64M`, `1Gi`, `1000`).
pub fn quantity_bytes(q: &str) -> u64 {
    let (num, mul) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("unsupported quantity {q:?}"))
        * mul
}

/// Capability names → the bit mask `/proc/<pid>/status` shows.
pub fn cap_mask(names: &[String]) -> u64 {
    names
        .iter()
        .map(|n| {
            let bit = match n.trim_start_matches("CAP_") {
                "SYS_PTRACE" => 19,
                "SYS_ADMIN" => 21,
                "SYS_NICE" => 23,
                "SYS_RESOURCE" => 24,
                "DAC_OVERRIDE" => 1,
                "DAC_READ_SEARCH" => 2,
                "PERFMON" => 38,
                "BPF" => 39,
                other => panic!("add capability {other} to cap_mask"),
            };
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}
