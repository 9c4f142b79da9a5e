#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "unit tests: a panic is how a test fails"
)]

use super::*;

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

/// `args` scrubbed with the default words.
fn scrubbed(args: &[&str]) -> Vec<String> {
    scrub(argv(args), &CmdlinePolicy::default()).expect("scrub prints a command line")
}

fn with_words(words: &[&str], args: &[&str]) -> Vec<String> {
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    let p = CmdlinePolicy::new(CmdlineMode::Scrub, &words).unwrap();
    scrub(argv(args), &p).unwrap()
}

#[test]
fn the_default_words_compile() {
    assert!(CmdlinePolicy::new(CmdlineMode::Scrub, &[]).is_ok());
    assert!(CmdlinePolicy::default().matcher.is_some());
    assert_eq!(CmdlinePolicy::default().mode(), CmdlineMode::Scrub);
}

#[test]
fn each_default_word_hides_its_value_in_each_form() {
    for w in DEFAULT_WORDS {
        let up = w.to_uppercase();
        for (args, want) in [
            (
                vec!["app".to_string(), format!("--{w}=hunter2")],
                vec!["app".to_string(), format!("--{w}=********")],
            ),
            (
                vec!["app".to_string(), format!("-{w}"), "hunter2".into()],
                vec!["app".to_string(), format!("-{w}"), MASK.into()],
            ),
            (
                vec!["app".to_string(), format!("{w}=hunter2")],
                vec!["app".to_string(), format!("{w}=********")],
            ),
            (
                vec!["app".to_string(), format!("{up}:"), "hunter2".into()],
                vec!["app".to_string(), format!("{up}:"), MASK.into()],
            ),
            (
                vec!["app".to_string(), format!("{up}:hunter2")],
                vec!["app".to_string(), format!("{up}:********")],
            ),
        ] {
            let got = scrub(args.clone(), &CmdlinePolicy::default()).unwrap();
            assert_eq!(got, want, "{args:?}");
        }
    }
}

#[test]
fn the_issues_victim_shows_masks_only() {
    assert_eq!(
        scrubbed(&["oomx-hog", "--password=hunter2", "--api-key", "sekrit"]),
        argv(&["oomx-hog", "--password=********", "--api-key", MASK])
    );
}

#[test]
fn keys_that_end_with_a_word_are_sensitive_whatever_their_case_and_separators() {
    assert_eq!(
        scrubbed(&[
            "app",
            "--DB-Password=a",
            "MYSQL_PWD=b",
            "--api_key",
            "c",
            "X-ApiKey:d",
            "--client.secret=e",
            "--github-access-token",
            "f",
        ]),
        argv(&[
            "app",
            "--DB-Password=********",
            "MYSQL_PWD=********",
            "--api_key",
            MASK,
            "X-ApiKey:********",
            "--client.secret=********",
            "--github-access-token",
            MASK,
        ])
    );
}

#[test]
fn names_that_only_begin_or_contain_a_word_are_kept() {
    // Where a secret is, not the secret: a path to it, its name, a flag about it.
    let kept = [
        "app",
        "--password-file=/run/secrets/db",
        "--secret-name",
        "db-creds",
        "--secrets-dir=/etc/x",
        "--no-password-prompt",
        "--cwd=/srv",
        "--apikeys-enabled=true",
        "--user=alice",
        "--token=not-in-the-default-list",
        "/etc/passwd",
        "cat",
        "./secret.txt",
    ];
    assert_eq!(scrubbed(&kept), argv(&kept));
}

#[test]
fn the_program_itself_is_never_a_key() {
    assert_eq!(scrubbed(&["passwd", "alice"]), argv(&["passwd", "alice"]));
    assert_eq!(
        scrubbed(&["/usr/bin/secret", "--verbose"]),
        argv(&["/usr/bin/secret", "--verbose"])
    );
}

#[test]
fn a_bare_word_hides_the_next_argument() {
    assert_eq!(
        scrubbed(&["mysqladmin", "-u", "root", "password", "n3w"]),
        argv(&["mysqladmin", "-u", "root", "password", MASK])
    );
}

#[test]
fn a_value_with_spaces_is_hidden_whole() {
    assert_eq!(
        scrubbed(&["app", "--password", "correct horse battery", "--next"]),
        argv(&["app", "--password", MASK, "--next"])
    );
    assert_eq!(
        scrubbed(&["app", "--password=correct horse", "--next"]),
        argv(&["app", "--password=********", "--next"])
    );
}

#[test]
fn a_key_and_its_value_in_one_argument_hide_the_rest_of_it() {
    assert_eq!(
        scrubbed(&["app", "PASSWORD: correct horse"]),
        argv(&["app", "PASSWORD: ********"])
    );
    assert_eq!(
        with_words(
            &["authorization"],
            &["curl", "-H", "Authorization: Bearer abc.def", "https://h/x"]
        ),
        argv(&["curl", "-H", "Authorization: ********", "https://h/x"])
    );
    // Not named: kept.
    assert_eq!(
        scrubbed(&["curl", "-H", "Authorization: Bearer abc.def"]),
        argv(&["curl", "-H", "Authorization: Bearer abc.def"])
    );
}

#[test]
fn an_empty_value_hides_nothing_else() {
    assert_eq!(
        scrubbed(&["app", "--password=", "--user", "bob"]),
        argv(&["app", "--password=", "--user", "bob"])
    );
    // `--password ""`: the empty argument was the value, `bob` is not.
    assert_eq!(
        scrubbed(&["app", "--password", "", "bob"]),
        argv(&["app", "--password", "", "bob"])
    );
}

#[test]
fn a_shell_command_in_one_argument_is_scanned_word_by_word() {
    assert_eq!(
        scrubbed(&[
            "/bin/sh",
            "-c",
            "mysql  --password=x -u root --api-key 'two words' db && PASSWORD: y z"
        ]),
        argv(&[
            "/bin/sh",
            "-c",
            "mysql  --password=******** -u root --api-key ******** db && PASSWORD: ******** z"
        ])
    );
    assert_eq!(
        scrubbed(&["sh", "-c", "run --secret=\"a b c\" --then"]),
        argv(&["sh", "-c", "run --secret=******** --then"])
    );
    // An unclosed quote hides the rest.
    assert_eq!(
        scrubbed(&["sh", "-c", "run --secret \"a b"]),
        argv(&["sh", "-c", "run --secret ********"])
    );
}

#[test]
fn url_passwords_are_hidden_and_their_users_kept() {
    assert_eq!(
        scrubbed(&[
            "app",
            "--db=postgres://app:hunter2@db:5432/x",
            "https://user:p@ss@example.com/path",
            "redis://:s3cret@cache",
            "https://example.com/a:b@c",
            "http://user@host/",
            "sh",
            "curl https://u:pw@h/x -o y"
        ]),
        argv(&[
            "app",
            "--db=postgres://app:********@db:5432/x",
            "https://user:********@example.com/path",
            "redis://:********@cache",
            "https://example.com/a:b@c",
            "http://user@host/",
            "sh",
            "curl https://u:********@h/x -o y"
        ])
    );
}

#[test]
fn scrub_words_extend_the_list_with_wildcards() {
    assert_eq!(
        with_words(
            &["token", "sql*"],
            &[
                "app",
                "--token=a",
                "--sqlconn",
                "b",
                "--password=c",
                "--tok=d"
            ]
        ),
        argv(&[
            "app",
            "--token=********",
            "--sqlconn",
            MASK,
            "--password=********",
            "--tok=d"
        ])
    );
    assert_eq!(
        with_words(
            &["*token"],
            &["app", "--refreshtoken=a", "--github-token", "b"]
        ),
        argv(&["app", "--refreshtoken=********", "--github-token", MASK])
    );
    // A dot is a dot, not any character.
    assert_eq!(
        with_words(&["a.b"], &["app", "--a.b=x", "--axb=y"]),
        argv(&["app", "--a.b=********", "--axb=y"])
    );
}

#[test]
fn words_outside_the_alphabet_are_refused() {
    for bad in ["", "*", "**", "pass word", "a(b", "tok$", "a/b", "pässwort"] {
        assert!(parse_word(bad).is_err(), "{bad:?}");
    }
    for good in [
        "token",
        "*token",
        "sql*",
        "*pass*d*",
        "client.secret",
        "X-Key_2",
    ] {
        assert_eq!(parse_word(good).unwrap(), good);
    }
    assert!(CmdlinePolicy::new(CmdlineMode::Scrub, &["a b".to_string()]).is_err());
}

#[test]
fn full_prints_as_is_and_drop_prints_nothing() {
    let args = argv(&["app", "--password=hunter2", "https://u:p@h"]);
    let full = CmdlinePolicy::new(CmdlineMode::Full, &[]).unwrap();
    assert_eq!(scrub(args.clone(), &full), Some(args.clone()));
    assert!(full.reads());
    let drop = CmdlinePolicy::new(CmdlineMode::Drop, &[]).unwrap();
    assert_eq!(scrub(args, &drop), None);
    assert!(!drop.reads());
}

#[test]
fn odd_arguments_do_not_break_it() {
    assert_eq!(scrubbed(&[]), Vec::<String>::new());
    assert_eq!(scrubbed(&[""]), argv(&[""]));
    assert_eq!(
        scrubbed(&["app", "--password"]),
        argv(&["app", "--password"])
    );
    assert_eq!(
        scrubbed(&["app", "--pässwort=ü", "--password=ü½"]),
        argv(&["app", "--pässwort=ü", "--password=********"])
    );
    assert_eq!(scrubbed(&["app", "  \t "]), argv(&["app", "  \t "]));
}
