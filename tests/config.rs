//! Keeps the shipped documentation honest: `config/wxagent.toml` must parse, hold the defaults
//! and document exactly the keys the loader knows; the README's test command must be what CI runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wxagent::config::{Config, ConfigSource, KNOWN_KEYS};

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

fn sample() -> (PathBuf, String) {
    repo_file("config/wxagent.toml")
}

fn parse(path: &Path, text: &str) -> Config {
    Config::from_toml_str(text, ConfigSource::Flag(path.to_path_buf()))
        .unwrap_or_else(|e| panic!("{} must be valid: {e:#}", path.display()))
}

/// One option line of the sample: `key = value` or, for an option left unset, `# key = value`.
#[derive(Debug)]
struct OptionLine {
    section: String,
    key: String,
    commented_out: bool,
    /// 0-based line index in the file.
    index: usize,
}

fn option_lines(text: &str) -> Vec<OptionLine> {
    let known = |section: &str, key: &str| KNOWN_KEYS.contains(&(section, key));
    let mut section = String::new();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let (body, commented_out) = match line.strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let Some((key, _)) = body.split_once(" = ") else {
            continue;
        };
        let key = key.trim();
        // Prose comments may contain " = "; only a known key makes a commented line an option.
        if commented_out && !known(&section, key) {
            continue;
        }
        if line.starts_with('#') && !commented_out {
            continue;
        }
        found.push(OptionLine {
            section: section.clone(),
            key: key.to_owned(),
            commented_out,
            index,
        });
    }
    found
}

#[test]
fn sample_config_is_valid_and_holds_the_defaults() {
    let (path, text) = sample();
    let c = parse(&path, &text);
    let d = Config::defaults();
    assert_eq!(c.agent.max_sessions, d.agent.max_sessions);
    assert_eq!(c.agent.admin_listen, d.agent.admin_listen);
    if cfg!(unix) {
        assert_eq!(c.agent.state_dir, d.agent.state_dir);
    }
    // machine_id is left unset in the sample, so the default (the host name) applies.
    assert_eq!(c.agent.machine_id, d.agent.machine_id);
    assert_eq!(c.control, d.control);
    assert_eq!(c.wechat, d.wechat);
    assert_eq!(c.qr, d.qr);
    assert_eq!(c.media, d.media);
    assert_eq!(c.pacing, d.pacing);
}

#[test]
fn sample_config_documents_exactly_the_known_keys() {
    let (_, text) = sample();
    let lines = option_lines(&text);
    let in_file: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l.section.clone(), l.key.clone()))
        .collect();
    let unique: BTreeSet<_> = in_file.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        in_file.len(),
        "an option appears twice: {in_file:?}"
    );
    let known: BTreeSet<(String, String)> = KNOWN_KEYS
        .iter()
        .map(|&(s, k)| (s.to_owned(), k.to_owned()))
        .collect();
    let missing: Vec<_> = known.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "known to the loader but not in the sample: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "in the sample but unknown to the loader: {unknown:?}"
    );
}

#[test]
fn every_sample_option_has_a_comment_naming_its_default() {
    let (_, text) = sample();
    let all: Vec<&str> = text.lines().collect();
    for option in option_lines(&text) {
        // The comment block right above the option line.
        let comment: Vec<&str> = all[..option.index]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        assert!(
            comment.iter().any(|l| l.contains("Default")),
            "[{}] {} has no comment stating its default",
            option.section,
            option.key
        );
    }
}

#[test]
fn sample_config_stays_valid_with_every_unset_option_set() {
    let (path, text) = sample();
    let lines = option_lines(&text);
    let commented: BTreeSet<usize> = lines
        .iter()
        .filter(|l| l.commented_out)
        .map(|l| l.index)
        .collect();
    assert!(
        !commented.is_empty(),
        "the sample shows examples for options left unset"
    );
    let enabled: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = if commented.contains(&i) {
                line.trim_start().trim_start_matches("# ")
            } else {
                line
            };
            format!("{line}\n")
        })
        .collect();
    let c = parse(&path, &enabled);
    assert!(c.control.callback_url.is_some());
    assert!(c.control.upload_url.is_some());
    assert!(c.control.secret_key.is_some());
    assert_ne!(c.agent.machine_id, "");
}
/// The README's test command, the one line of it that runs nextest.
fn readme_test_command() -> String {
    let (_, readme) = repo_file("README.md");
    let commands: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo ") && l.contains("cargo nextest run"))
        .collect();
    assert_eq!(
        commands.len(),
        1,
        "README.md must show one test command line: {commands:?}"
    );
    commands[0].to_owned()
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let command = readme_test_command();
    let (path, script) = repo_file(".ci/run");
    assert!(
        script.lines().any(|l| l.trim() == command),
        "{} must run the README's test command verbatim:\n{command}",
        path.display()
    );
}

#[test]
fn the_readme_test_command_is_the_last_thing_ci_runs() {
    // .ci/run relies on this: its exit status is that of its last command.
    let command = readme_test_command();
    let (_, script) = repo_file(".ci/run");
    let last = script
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(last, Some(command.as_str()));
}
