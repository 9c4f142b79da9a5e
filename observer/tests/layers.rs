//! The import graph of `observer/src` runs one way: each module imports only the modules
//! below it in [`LAYERS`], the files of one module form no cycle, and no file grows past
//! [`MAX_LINES`].
//!
//! Read from the source text, not the compiler: `use crate::…` trees (grouped, nested,
//! multi-line), inline `crate::a::b` paths, and `super::` / `self::` paths, with comments and
//! string literals left out. `lib.rs` (which declares the modules) and `main.rs` (the binary
//! crate) sit outside the order.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use source::{absolute, paths_of, strip, tokens, ModPath};

/// Reading paths out of Rust source (a directory of its own: `tests/*.rs` are test crates).
#[path = "layers/source.rs"]
mod source;

/// The modules of `observer/src`, bottom to top, each with why it sits where it does. A
/// module may import only modules listed before it.
const LAYERS: &[(&str, &str)] = &[
    ("cause", "an error's causes in one line, its errno: every layer reports causes, so it imports nothing"),
    ("scrub", "command lines without their secrets: any layer that prints one calls it, so it imports nothing"),
    ("host", "what the host says (cgroup mounts, id → path, /proc): plain facts, no kernel programs"),
    ("kernel", "loading, hooks, BTF, maps, records, pins: kernel-side types and KernelError only"),
    ("enrich", "which container a kernel record belongs to, from containerd"),
    ("event", "the event schema (Event, EventKind, ExitInfo, ContainerRef): what every consumer reads"),
    ("audit", "declared vs enforced limits, its findings shaped as events"),
    ("forecast", "the memory model before the kill: cgroupfs reads, limits, growth, oom_risk events"),
    ("query", "the kills remembered and the query socket, drawn from events"),
    ("sinks", "where events go, behind one Sink trait"),
    ("pipeline", "the processor: sequencing and ordering, TaskOOM as the step before the sinks"),
    ("error", "ObserverError wraps each layer's error and asks it for its exit code"),
    ("daemon", "wires the layers together and runs the loop"),
    ("cli", "the commands, on top of everything"),
];

/// No file of `observer/src` is longer than this.
const MAX_LINES: usize = 500;

/// One source file.
struct File {
    /// Relative to `observer/src`, for messages.
    rel: String,
    /// Its module path (for `main.rs`, `None`: another crate).
    module: Option<ModPath>,
    /// Its text.
    text: String,
}

/// One import: a path used by a file, resolved to the file that defines its module.
#[derive(Debug, Clone)]
struct Import {
    /// The importing file (index into the files).
    from: usize,
    /// The file imported from.
    to: usize,
    /// 1-based line of the path.
    line: usize,
    /// The path as written, made absolute (`crate::kernel::hooks::Strategy`).
    path: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path a file has by its place in the tree (`a/mod.rs` and `a.rs` are `a`).
fn module_of(rel: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && stem == "main" {
        return None;
    }
    if !(parts.is_empty() && stem == "lib") && stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

/// The file defining the longest module prefix of `abs`.
fn file_of(abs: &[String], by_module: &BTreeMap<ModPath, usize>) -> Option<usize> {
    (0..=abs.len())
        .rev()
        .find_map(|n| by_module.get(&abs[..n].to_vec()).copied())
}

/// Reads the tree: its files (with `#[path]`-included ones given their declared module).
fn read_tree(src: &Path) -> Vec<File> {
    let mut paths = Vec::new();
    rs_files(src, &mut paths);
    let mut files: Vec<File> = paths
        .iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(src).ok()?;
            Some(File {
                rel: rel.to_string_lossy().into_owned(),
                module: module_of(rel),
                text: fs::read_to_string(p).ok()?,
            })
        })
        .collect();
    // `#[path = "x_tests.rs"] mod tests;` makes that file the module `…::tests`.
    let mut declared = Vec::new();
    for f in &files {
        let Some(module) = &f.module else { continue };
        let s = strip(&f.text).with_strings;
        for (at, _) in s.match_indices("#[path") {
            let rest = &s[at..];
            let Some(q1) = rest.find('"') else { continue };
            let Some(q2) = rest[q1 + 1..].find('"') else {
                continue;
            };
            let target = &rest[q1 + 1..q1 + 1 + q2];
            let after = tokens(&rest[q1 + 2 + q2..]);
            let name = after
                .windows(2)
                .find(|w| w[0].text == "mod")
                .map(|w| w[1].text.clone());
            let dir = Path::new(&f.rel).parent().unwrap_or(Path::new(""));
            if let Some(name) = name {
                let mut m = module.clone();
                m.push(name);
                declared.push((dir.join(target).to_string_lossy().into_owned(), m));
            }
        }
    }
    for (rel, m) in declared {
        if let Some(f) = files.iter_mut().find(|f| f.rel == rel) {
            f.module = Some(m);
        }
    }
    files
}

/// Every import of the tree that resolves to a file of it.
fn imports(files: &[File]) -> Vec<Import> {
    let by_module: BTreeMap<ModPath, usize> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((f.module.clone()?, i)))
        .collect();
    let modules: BTreeSet<ModPath> = by_module.keys().cloned().collect();
    let mut out = Vec::new();
    for (from, f) in files.iter().enumerate() {
        let Some(module) = &f.module else { continue };
        for (base, path, line) in paths_of(&f.text, module) {
            let Some(abs) = absolute(&base, &path, &modules) else {
                continue;
            };
            let Some(to) = file_of(&abs, &by_module) else {
                continue;
            };
            out.push(Import {
                from,
                to,
                line,
                path: format!("crate::{}", abs.join("::")),
            });
        }
    }
    out
}

/// The layer of a top-level module, and its index in [`LAYERS`].
fn layer(name: &str) -> Option<usize> {
    LAYERS.iter().position(|(n, _)| *n == name)
}

/// Imports that run sideways to an unknown module or up a layer.
fn layer_violations(files: &[File], imports: &[Import]) -> Vec<String> {
    let mut out = Vec::new();
    for imp in imports {
        let (f, t) = (&files[imp.from], &files[imp.to]);
        let (Some(fm), Some(tm)) = (&f.module, &t.module) else {
            continue;
        };
        // lib.rs declares the modules: it is in no layer, and importing its items is allowed.
        let (Some(from), Some(to)) = (fm.first(), tm.first()) else {
            continue;
        };
        if from == to {
            continue;
        }
        match (layer(from), layer(to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(a), Some(b)) => out.push(format!(
                "{}:{} imports {}: `{from}` (layer {}) may not import `{to}` (layer {}, above it)",
                f.rel,
                imp.line,
                imp.path,
                a + 1,
                b + 1
            )),
            (None, _) => out.push(format!(
                "{}:{} imports {}: module `{from}` is not in LAYERS",
                f.rel, imp.line, imp.path
            )),
            (_, None) => out.push(format!(
                "{}:{} imports {}: module `{to}` is not in LAYERS",
                f.rel, imp.line, imp.path
            )),
        }
    }
    out
}

/// Strongly connected components of more than one file (Tarjan), each sorted.
fn cycles(n: usize, edges: &BTreeSet<(usize, usize)>) -> Vec<Vec<usize>> {
    struct St<'a> {
        adj: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: &'a mut Vec<Vec<usize>>,
    }
    fn visit(s: &mut St<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for w in s.adj[v].clone() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut adj = vec![Vec::new(); n];
    for (a, b) in edges {
        adj[*a].push(*b);
    }
    let mut out = Vec::new();
    let mut s = St {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: &mut out,
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    out
}

/// Each cycle between files, with the imports that close it.
fn cycle_violations(files: &[File], imports: &[Import]) -> Vec<String> {
    let edges: BTreeSet<(usize, usize)> = imports
        .iter()
        .filter(|i| i.from != i.to)
        .map(|i| (i.from, i.to))
        .collect();
    cycles(files.len(), &edges)
        .into_iter()
        .map(|comp| {
            let names: Vec<&str> = comp.iter().map(|&i| files[i].rel.as_str()).collect();
            let mut seen = BTreeSet::new();
            let how: Vec<String> = imports
                .iter()
                .filter(|i| i.from != i.to && comp.contains(&i.from) && comp.contains(&i.to))
                .filter(|i| seen.insert((i.from, i.to)))
                .map(|i| format!("{}:{} imports {}", files[i.from].rel, i.line, i.path))
                .collect();
            format!("a cycle between {}: {}", names.join(", "), how.join("; "))
        })
        .collect()
}

fn report(what: &str, v: &[String]) -> String {
    format!("{what} ({}):\n  {}", v.len(), v.join("\n  "))
}

#[test]
fn imports_run_down_the_layers() {
    let files = read_tree(&src_dir());
    assert!(
        files.len() > 10,
        "no sources found under {}",
        src_dir().display()
    );
    let v = layer_violations(&files, &imports(&files));
    assert!(
        v.is_empty(),
        "{}",
        report("imports that do not run down the layers", &v)
    );
}

#[test]
fn no_cycle_between_files() {
    let files = read_tree(&src_dir());
    let v = cycle_violations(&files, &imports(&files));
    assert!(v.is_empty(), "{}", report("import cycles", &v));
}

#[test]
fn no_file_is_over_the_line_limit() {
    let files = read_tree(&src_dir());
    let v: Vec<String> = files
        .iter()
        .filter(|f| f.text.lines().count() > MAX_LINES)
        .map(|f| {
            format!(
                "{}: {} lines (at most {MAX_LINES})",
                f.rel,
                f.text.lines().count()
            )
        })
        .collect();
    assert!(v.is_empty(), "{}", report("files over the limit", &v));
}

/// The checks fail where they should: an import up a layer, a cycle, with the files named.
#[test]
fn the_checks_name_the_file_and_the_import() {
    let file = |rel: &str, module: &[&str], text: &str| File {
        rel: rel.into(),
        module: Some(module.iter().map(|s| s.to_string()).collect()),
        text: text.into(),
    };
    let files = vec![
        file("lib.rs", &[], "pub mod kernel; pub mod host;"),
        file("kernel/mod.rs", &["kernel"], "pub mod a; pub mod b;"),
        file(
            "kernel/a.rs",
            &["kernel", "a"],
            "use super::b::X;\nuse crate::daemon::run;",
        ),
        file(
            "kernel/b.rs",
            &["kernel", "b"],
            "pub struct X;\nfn f() { crate::kernel::a::g(); }",
        ),
        file("daemon.rs", &["daemon"], "use crate::host;"),
        file(
            "host/mod.rs",
            &["host"],
            "use crate::pipeline::event::Event;",
        ),
    ];
    let imps = imports(&files);
    let layers = layer_violations(&files, &imps);
    assert_eq!(
        layers,
        [
            "kernel/a.rs:2 imports crate::daemon::run: `kernel` (layer 4) may not import `daemon` (layer 13, above it)",
        ],
        "an import of a module that does not exist resolves to lib.rs, which the compiler refuses anyway"
    );
    let cyc = cycle_violations(&files, &imps);
    assert_eq!(
        cyc,
        ["a cycle between kernel/a.rs, kernel/b.rs: kernel/a.rs:1 imports crate::kernel::b::X; kernel/b.rs:2 imports crate::kernel::a::g"]
    );
}
