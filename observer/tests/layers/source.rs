//! Reading the paths a Rust file names: `use` trees (grouped, nested, renamed, over several
//! lines), inline `crate::`/`super::`/`self::` paths, and the inline modules they sit in;
//! comments and string literals say nothing.

use std::collections::BTreeSet;

/// A module path inside the crate (`["kernel", "hooks"]`); the crate root is empty.
pub(crate) type ModPath = Vec<String>;

/// The source with comments blanked (`with_strings`), and also string and char literals'
/// contents blanked (`code`); both keep every line of the original where it was.
pub(crate) struct Stripped {
    /// Comments blanked.
    pub(crate) with_strings: String,
    /// Comments and literals blanked.
    pub(crate) code: String,
}

pub(crate) fn strip(text: &str) -> Stripped {
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
pub(crate) struct Token {
    /// The token.
    pub(crate) text: String,
    /// 1-based line.
    pub(crate) line: usize,
}

pub(crate) fn tokens(code: &str) -> Vec<Token> {
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
pub(crate) fn paths_of(text: &str, file_module: &[String]) -> Vec<(ModPath, Vec<String>, usize)> {
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
pub(crate) fn absolute(
    base: &[String],
    path: &[String],
    modules: &BTreeSet<ModPath>,
) -> Option<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
