//! Command lines without their secrets. Passwords, tokens and keys are passed as arguments
//! every day, and every command line the daemon prints flows on to log pipelines: each one
//! goes through [`scrub`] first, under the [`CmdlinePolicy`] that `run --cmdline` and
//! `--scrub-word` chose. Imports nothing from the crate, so any layer can call it.
//!
//! The rules (docs/cli.md, "Command lines"):
//!
//! - A *key* is a name made of letters, digits, `_`, `-` and `.` (leading dashes included).
//!   It is sensitive when it ends with one of the words, case-insensitively, `_` and `-`
//!   counting as the same: `--password`, `--db-password`, `MYSQL_PWD`, `--api-key`, `X-ApiKey`.
//!   A name that only begins with a word says where a secret is, not what it is, and is kept:
//!   `--password-file=/run/x`, `--secret-name db`.
//! - Its value becomes [`MASK`] in each form: `--password=x`, `password=x`, `password:x`,
//!   `--password x`, `PASSWORD: x` (one argument or two), and a bare word before its value
//!   (`mysqladmin password x`).
//! - A URL's password becomes [`MASK`] wherever it appears: `postgres://u:p@db/x` →
//!   `postgres://u:********@db/x`.
//! - An argument that holds spaces (`sh -c "mysql --password=x db"`) is a command line of its
//!   own, scanned word by word; a quoted value there is hidden up to its closing quote.

use regex::Regex;

/// What replaces a secret: the mask Datadog's agent prints.
pub const MASK: &str = "********";

/// The words whose arguments' values are hidden by default: the default list of Datadog's
/// agent's process-argument scrubber (`pwd` is in its code, not on its docs page).
pub const DEFAULT_WORDS: &[&str] = &[
    "password",
    "passwd",
    "mysql_pwd",
    "access_token",
    "auth_token",
    "api_key",
    "apikey",
    "pwd",
    "secret",
    "credentials",
    "stripetoken",
];

/// `run --cmdline`: what becomes of a command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CmdlineMode {
    /// Print it with the values of credential-like arguments hidden.
    #[default]
    Scrub,
    /// Print it as the process has it.
    Full,
    /// Print none: the field is `null` (and `/proc/<pid>/cmdline` is not read).
    Drop,
}

/// Why a policy cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// A `--scrub-word` outside the word alphabet.
    #[error("scrub word `{0}`: use letters, digits, `_`, `-`, `.` and `*` (not `*` alone)")]
    BadWord(String),
    /// The words did not make a pattern (not expected from valid words).
    #[error("the scrub words make no pattern: {0}")]
    Pattern(#[from] regex::Error),
}

/// A `--scrub-word`, checked: letters, digits, `_`, `-`, `.`, and `*` for any run of those
/// (`*token`, `sql*`), as Datadog's `custom_sensitive_words`; a word of `*` alone would hide
/// every value and is refused.
pub fn parse_word(s: &str) -> Result<String, ScrubError> {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'))
        && s.chars().any(|c| c != '*');
    if ok {
        Ok(s.to_string())
    } else {
        Err(ScrubError::BadWord(s.to_string()))
    }
}

/// The compiled words.
#[derive(Debug, Clone)]
struct Matcher {
    /// A whole key that ends with one of the words.
    key: Regex,
    /// `scheme://user:` of a URL with a password, up to that password's `@`.
    userinfo: Regex,
}

/// What the daemon does with each command line it prints.
#[derive(Debug, Clone)]
pub struct CmdlinePolicy {
    mode: CmdlineMode,
    /// `None` only if the words could not be compiled: then nothing is printed.
    matcher: Option<Matcher>,
}

impl CmdlinePolicy {
    /// `mode`, with the [`DEFAULT_WORDS`] and `extra` words (checked by [`parse_word`]).
    pub fn new(mode: CmdlineMode, extra: &[String]) -> Result<CmdlinePolicy, ScrubError> {
        let mut alternatives = Vec::new();
        for w in DEFAULT_WORDS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
        {
            alternatives.push(word_pattern(&parse_word(w)?));
        }
        let key = Regex::new(&format!("(?i)^[a-z0-9_.-]*(?:{})$", alternatives.join("|")))?;
        // The password runs to the authority's last `@` (an `@` inside it is legal enough
        // to be seen); a `/`, `?` or `#` ends the authority.
        let userinfo = Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*@")?;
        Ok(CmdlinePolicy {
            mode,
            matcher: Some(Matcher { key, userinfo }),
        })
    }

    /// The chosen mode.
    pub fn mode(&self) -> CmdlineMode {
        self.mode
    }

    /// Whether command lines are read at all (`drop` spares the read of the victim's memory).
    pub fn reads(&self) -> bool {
        self.mode != CmdlineMode::Drop
    }
}

impl Default for CmdlinePolicy {
    /// `scrub` with the default words. They compile (a unit test says so); were they ever not
    /// to, no command line is printed rather than an unscrubbed one.
    fn default() -> Self {
        CmdlinePolicy::new(CmdlineMode::Scrub, &[]).unwrap_or(CmdlinePolicy {
            mode: CmdlineMode::Scrub,
            matcher: None,
        })
    }
}

/// A word as a pattern: `_` and `-` alike, `*` any run of key characters.
fn word_pattern(w: &str) -> String {
    w.chars()
        .map(|c| match c {
            '_' | '-' => "[-_]".to_string(),
            '*' => "[a-z0-9_.-]*".to_string(),
            c => regex::escape(&c.to_string()),
        })
        .collect()
}

/// The command line `args` as the daemon may print it under `policy`: `None` for `drop`
/// (the event's field is `null`), the arguments unchanged for `full`, and for `scrub` the
/// values of credential-like arguments and URL passwords replaced by [`MASK`] (the rules
/// are in this module's documentation). Pure: it reads nothing but its arguments.
pub fn scrub(args: Vec<String>, policy: &CmdlinePolicy) -> Option<Vec<String>> {
    match policy.mode {
        CmdlineMode::Drop => None,
        CmdlineMode::Full => Some(args),
        CmdlineMode::Scrub => policy.matcher.as_ref().map(|m| m.scrub(args)),
    }
}

/// One whitespace-separated word of one argument: `arg`, byte range `start..end`.
#[derive(Debug, Clone, Copy)]
struct Word {
    arg: usize,
    start: usize,
    end: usize,
    /// The first word of its argument.
    first: bool,
}

impl Matcher {
    fn scrub(&self, args: Vec<String>) -> Vec<String> {
        let words: Vec<Word> = args
            .iter()
            .enumerate()
            .flat_map(|(arg, a)| {
                let base = a.as_ptr() as usize;
                a.split_ascii_whitespace().enumerate().map(move |(i, w)| {
                    let start = w.as_ptr() as usize - base;
                    Word {
                        arg,
                        start,
                        end: start + w.len(),
                        first: i == 0,
                    }
                })
            })
            .collect();
        // Byte ranges to mask, per argument, in order.
        let mut masks: Vec<Vec<(usize, usize)>> = vec![Vec::new(); args.len()];
        // The argument of the key whose value is the next word.
        let mut pending: Option<usize> = None;
        for w in &words {
            let text = &args[w.arg];
            // Words inside a masked quoted value are already hidden.
            if masks[w.arg].last().is_some_and(|&(_, end)| w.start < end) {
                continue;
            }
            if let Some(key_arg) = pending.take() {
                if w.arg == key_arg {
                    masks[w.arg].push(value_range(text, w.start, w));
                    continue;
                }
                if w.arg == key_arg + 1 {
                    // An argument of its own is the value, spaces and all.
                    masks[w.arg].push((0, text.len()));
                    continue;
                }
                // An empty argument was the value: this word is read as any other.
            }
            // The program itself is never a key.
            if w.arg == 0 && w.first {
                continue;
            }
            let word = &text[w.start..w.end];
            match word.find(['=', ':']) {
                Some(p) if self.key.is_match(&word[..p]) => {
                    let value = w.start + p + 1;
                    if value < w.end {
                        masks[w.arg].push(value_range(text, value, w));
                    } else if word.ends_with(':') {
                        // `PASSWORD: x`; as one argument (`-H "Authorization: Bearer x"`),
                        // the rest of it.
                        let rest = &text[w.end..];
                        if w.first && !rest.trim().is_empty() {
                            let gap = rest.len() - rest.trim_start().len();
                            masks[w.arg].push((w.end + gap, text.len()));
                        } else {
                            pending = Some(w.arg);
                        }
                    }
                }
                Some(_) => {}
                None if self.key.is_match(word) => pending = Some(w.arg),
                None => {}
            }
        }
        args.into_iter()
            .zip(masks)
            .map(|(a, m)| self.render(&a, &m))
            .collect()
    }

    /// `a` with its `masks` replaced by [`MASK`] and URL passwords in the rest too.
    fn render(&self, a: &str, masks: &[(usize, usize)]) -> String {
        let mut out = String::with_capacity(a.len());
        let mut at = 0;
        for &(start, end) in masks {
            out.push_str(
                &self
                    .userinfo
                    .replace_all(&a[at..start], format!("${{1}}{MASK}@")),
            );
            out.push_str(MASK);
            at = end;
        }
        out.push_str(
            &self
                .userinfo
                .replace_all(&a[at..], format!("${{1}}{MASK}@")),
        );
        out
    }
}

/// Where a value that starts at byte `start` of word `w` (of argument `text`) ends: the end
/// of the argument when the word opens it (it was one argument, spaces and all), else its
/// closing quote if it opens one, else the end of the word.
fn value_range(text: &str, start: usize, w: &Word) -> (usize, usize) {
    if w.first {
        return (start, text.len());
    }
    let rest = &text[start..];
    if let Some(q) = rest.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        return match rest[1..].find(q) {
            Some(close) => (start, (start + 1 + close + 1).max(w.end)),
            None => (start, text.len()),
        };
    }
    (start, w.end)
}

#[cfg(test)]
#[path = "scrub_tests.rs"]
mod tests;
