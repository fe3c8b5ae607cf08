//! The README's two commands keep working: the main one is run here exactly as
//! written (plus a scratch data directory), and the test command is the one CI runs.

use std::process::Command;

use ficus_e2e::{readme_main_commands, workspace_root};

#[test]
fn ci_runs_the_readme_test_command() {
    let (_, test) = readme_main_commands();
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains(&test), ".ci/run does not run the README's test command `{test}`");
}

#[test]
fn readme_main_command_runs_the_whole_walkthrough() {
    let (run, _) = readme_main_commands();
    let words: Vec<&str> = run.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"cargo"));
    assert!(run.contains("walkthrough") && run.contains("--auto"), "the main command is the walkthrough: `{run}`");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(words[0])
        .args(&words[1..])
        .arg("--data-dir")
        .arg(data.path())
        .current_dir(workspace_root())
        .env("NO_COLOR", "1")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`{run}` exited {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    crate::walkthrough::check_output(&stdout);
}
