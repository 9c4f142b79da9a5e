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

/// The modules of `observer/src`, bottom to top, each with why it sits where it does. A
/// module may import only modules listed before it.
const LAYERS: &[(&str, &str)] = &[
    ("cause", "an error's causes in one line, its errno: every layer reports causes, so it imports nothing"),
    ("host", "what the host says (cgroup mounts, id → path, /proc): plain facts, no kernel programs"),
    ("kernel", "loading, hooks, BTF, maps, records, pins: kernel-side types and KernelError only"),
    ("enrich", "which container a kernel record belongs to, from containerd"),
    ("event", "the event schema (Event, EventKind, ExitInfo, ContainerRef): what every consumer reads"),
    ("audit", "declared vs enforced limits, its findings shaped as events"),
    ("query", "the kills remembered and the query socket, drawn from events"),
    ("sinks", "where events go, behind one Sink trait"),
    ("pipeline", "the processor: sequencing and ordering, TaskOOM as the step before the sinks"),
    ("error", "ObserverError wraps each layer's error and asks it for its exit code"),
    ("daemon", "wires the layers together and runs the loop"),
    ("cli", "the commands, on top of everything"),
];

/// No file of `observer/src` is longer than this.
const MAX_LINES: usize = 500;

/// A module path inside the crate (`["kernel", "hooks"]`); the crate root is empty.
type ModPath = Vec<String>;

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

/// The source with comments blanked (`with_strings`), and also string and char literals'
/// contents blanked (`code`); both keep every line of the original where it was.
struct Stripped {
    with_strings: String,
    code: String,
}

fn strip(text: &str) -> Stripped {
    let c: Vec<char> = text.chars().collect();
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut with_strings = String::with_capacity(text.len());
    let mut code = String::with_capacity(text.len());
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        // Comments: `//…` to the end of the line, `/* … */` nested.
        if at(i) == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                with_strings.push(' ');
                code.push(' ');
                i += 1;
            }
            continue;
        }
        if at(i) == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    with_strings.push_str("  ");
                    code.push_str("  ");
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    with_strings.push_str("  ");
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    with_strings.push(blank(c[i]));
                    code.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"…", r#"…"#, br#"…"#.
        let prev = if i > 0 { at(i - 1) } else { ' ' };
        let raw_start =
            at(i) == 'r' && (!ident(prev) || (prev == 'b' && (i < 2 || !ident(at(i - 2))))) && {
                let mut k = i + 1;
                while at(k) == '#' {
                    k += 1;
                }
                at(k) == '"'
            };
        if raw_start {
            let mut hashes = 0;
            let mut k = i + 1;
            while at(k) == '#' {
                hashes += 1;
                k += 1;
            }
            // Copy `r##"` as is.
            for ch in &c[i..=k] {
                with_strings.push(*ch);
                code.push(*ch);
            }
            i = k + 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| at(i + h) == '#') {
                    for ch in &c[i..=i + hashes] {
                        with_strings.push(*ch);
                        code.push(*ch);
                    }
                    i += hashes + 1;
                    break;
                }
                with_strings.push(c[i]);
                code.push(blank(c[i]));
                i += 1;
            }
            continue;
        }
        if at(i) == '"' {
            with_strings.push('"');
            code.push('"');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    with_strings.push(c[i]);
                    code.push(' ');
                    i += 1;
                    if i < c.len() {
                        with_strings.push(c[i]);
                        code.push(blank(c[i]));
                        i += 1;
                    }
                    continue;
                }
                if c[i] == '"' {
                    with_strings.push('"');
                    code.push('"');
                    i += 1;
                    break;
                }
                with_strings.push(c[i]);
                code.push(blank(c[i]));
                i += 1;
            }
            continue;
        }
        // Char literals ('a', '\n', '\u{..}'), not lifetimes ('a, 'static).
        if at(i) == '\'' {
            let end = if at(i + 1) == '\\' {
                (i + 2..c.len()).find(|&k| c[k] == '\'')
            } else if at(i + 2) == '\'' {
                Some(i + 2)
            } else {
                None
            };
            if let Some(end) = end {
                with_strings.extend(&c[i..=end]);
                code.push('\'');
                code.extend(c[i + 1..end].iter().map(|_| ' '));
                code.push('\'');
                i = end + 1;
                continue;
            }
        }
        with_strings.push(c[i]);
        code.push(c[i]);
        i += 1;
    }
    Stripped { with_strings, code }
}

/// A token of the stripped code: an identifier, `::`, or one punctuation character.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Parses one use tree starting at `toks[*i]`, appending each full path (prefix included).
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix.to_vec();
    let mut line = toks.get(*i).map_or(0, |t| t.line);
    loop {
        let Some(t) = toks.get(*i) else { return };
        match t.text.as_str() {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| t.text.as_str()) {
                        None => return,
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        Some(",") => *i += 1,
                        Some(_) => use_tree(toks, i, &path, out),
                    }
                }
            }
            "*" => {
                *i += 1;
                out.push((path, line));
                return;
            }
            "as" => {
                // `as name`: the rename does not change what is imported.
                *i += 2;
                out.push((path, line));
                return;
            }
            "," | "}" | ";" => {
                out.push((path, line));
                return;
            }
            s if is_ident(s) => {
                if path.len() == prefix.len() {
                    line = t.line;
                }
                if s != "self" || path.is_empty() {
                    path.push(s.to_string());
                }
                *i += 1;
            }
            _ => {
                *i += 1;
            }
        }
    }
}

/// Every path a file names that may lead into the crate: (module path it was written in,
/// the path's segments, line).
fn paths_of(text: &str, file_module: &[String]) -> Vec<(ModPath, Vec<String>, usize)> {
    let toks = tokens(&strip(text).code);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside them).
    let mut mods: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let base = |mods: &[(String, usize)]| -> ModPath {
        let mut b = file_module.to_vec();
        b.extend(mods.iter().map(|(n, _)| n.clone()));
        b
    };
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        match t {
            "{" => {
                depth += 1;
                i += 1;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                while mods.last().is_some_and(|(_, d)| *d > depth) {
                    mods.pop();
                }
                i += 1;
            }
            "mod" if toks.get(i + 2).is_some_and(|t| t.text == "{") => {
                if let Some(name) = toks.get(i + 1) {
                    mods.push((name.text.clone(), depth + 1));
                }
                i += 2;
            }
            "use" => {
                i += 1;
                let mut trees = Vec::new();
                use_tree(&toks, &mut i, &[], &mut trees);
                for (p, line) in trees {
                    out.push((base(&mods), p, line));
                }
            }
            "crate" | "super" | "self"
                if toks.get(i + 1).is_some_and(|n| n.text == "::")
                    && (i == 0 || toks[i - 1].text != "::") =>
            {
                let line = toks[i].line;
                let mut p = vec![t.to_string()];
                let mut k = i + 1;
                while toks.get(k).is_some_and(|n| n.text == "::")
                    && toks.get(k + 1).is_some_and(|n| is_ident(&n.text))
                {
                    p.push(toks[k + 1].text.clone());
                    k += 2;
                }
                out.push((base(&mods), p, line));
                i = k;
            }
            _ => i += 1,
        }
    }
    out
}

/// The absolute form of `path` written in module `base`, or `None` when it leads outside
/// the crate (`std::…`, another crate).
fn absolute(base: &[String], path: &[String], modules: &BTreeSet<ModPath>) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut abs: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => base.to_vec(),
        "super" => {
            let mut b = base.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                b.pop();
                rest = &rest[1..];
            }
            b.extend(rest.iter().cloned());
            return Some(b);
        }
        // 2018 paths may start at a child module in scope.
        name => {
            let mut child = base.to_vec();
            child.push(name.to_string());
            if !modules.contains(&child) {
                return None;
            }
            base.to_vec()
        }
    };
    let skip = usize::from(matches!(first.as_str(), "crate" | "self"));
    abs.extend(path[skip..].iter().cloned());
    Some(abs)
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

/// The reader itself: grouped, nested and renamed trees; inline and `super` paths; nothing
/// from comments, strings or other crates.
#[test]
fn the_reader_finds_every_path_and_nothing_else() {
    let text = r##"
//! See [`crate::cli`] (a comment, not an import).
use std::{fmt, io};
use crate::{
    kernel::{hooks::{self, Strategy as S}, maps::*},
    host::procfs,
};
pub(crate) use super::sibling::Thing;
const S: &str = "crate::daemon::run";
const R: &str = r#"crate::daemon"#;
fn f<'a>(x: &'a str) -> char {
    let _ = crate::error::ObserverError::exit_code;
    '"'
}
#[cfg(test)]
mod tests {
    use super::*;
    use super::super::up::Y;
}
"##;
    let module: ModPath = vec!["kernel".into(), "pins".into()];
    let got: Vec<(String, usize)> = paths_of(text, &module)
        .into_iter()
        .map(|(base, p, line)| {
            let mut s = base.join("/");
            s.push_str(" | ");
            s.push_str(&p.join("::"));
            (s, line)
        })
        .collect();
    let want: Vec<(String, usize)> = [
        ("kernel/pins | std::fmt", 3),
        ("kernel/pins | std::io", 3),
        ("kernel/pins | crate::kernel::hooks", 5),
        ("kernel/pins | crate::kernel::hooks::Strategy", 5),
        ("kernel/pins | crate::kernel::maps", 5),
        ("kernel/pins | crate::host::procfs", 6),
        ("kernel/pins | super::sibling::Thing", 8),
        ("kernel/pins | crate::error::ObserverError::exit_code", 12),
        ("kernel/pins/tests | super", 17),
        ("kernel/pins/tests | super::super::up::Y", 18),
    ]
    .iter()
    .map(|(s, l)| (s.to_string(), *l))
    .collect();
    assert_eq!(got, want);
    let modules: BTreeSet<ModPath> = [vec!["kernel".to_string()]].into_iter().collect();
    let tests_base: ModPath = vec!["kernel".into(), "pins".into(), "tests".into()];
    assert_eq!(
        absolute(
            &tests_base,
            &["super".into(), "super".into(), "up".into()],
            &modules
        ),
        Some(vec!["kernel".to_string(), "up".to_string()])
    );
    assert_eq!(
        absolute(&module, &["std".into(), "fmt".into()], &modules),
        None
    );
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
            "kernel/a.rs:2 imports crate::daemon::run: `kernel` (layer 3) may not import `daemon` (layer 11, above it)",
        ],
        "an import of a module that does not exist resolves to lib.rs, which the compiler refuses anyway"
    );
    let cyc = cycle_violations(&files, &imps);
    assert_eq!(
        cyc,
        ["a cycle between kernel/a.rs, kernel/b.rs: kernel/a.rs:1 imports crate::kernel::b::X; kernel/b.rs:2 imports crate::kernel::a::g"]
    );
}
