//! Change coupling as Code Maat computes it, against values worked out by hand.

use ficus_analyzer::history::coupling;

fn commit(files: &[&str]) -> Vec<String> {
    files.iter().map(|s| s.to_string()).collect()
}

/// a.rs and b.rs change together in 5 commits; a.rs alone once more; c.rs alone 5
/// times and once with a.rs; one bulk commit of 31 files (ignored: over the changeset
/// limit of 30). Revisions: a 7, b 5, c 6. Pairs: (a, b) share 5 → degree
/// 5 / ((7 + 5) / 2) = 0.83333; (a, c) share 1 < 5 → dropped.
#[test]
fn degree_is_shared_commits_over_average_revisions() {
    let mut commits = vec![commit(&["a.rs", "b.rs"]); 5];
    commits.push(commit(&["a.rs"]));
    commits.extend(vec![commit(&["c.rs"]); 5]);
    commits.push(commit(&["a.rs", "c.rs"]));
    let bulk: Vec<String> = (0..29).map(|i| format!("x{i}.rs")).chain(["a.rs".into(), "b.rs".into()]).collect();
    commits.push(bulk);
    let c = coupling(&commits);
    assert_eq!(c.pairs.len(), 1, "{c:?}");
    let d = c.pairs[&("a.rs".to_string(), "b.rs".to_string())];
    assert!((d - 5.0 / 6.0).abs() < 1e-9, "{d}");
}

/// End to end through `git log`: a crate whose two modules changed together in six
/// commits (and `lib.rs` once) has one coupled pair, `src/a.rs`–`src/b.rs`.
#[test]
fn history_reads_git_log() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(root)
            .output()
            .expect("git runs")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"h\"\n").expect("write");
    std::fs::create_dir(root.join("src")).expect("mkdir");
    std::fs::write(root.join("src/lib.rs"), "pub mod a;\npub mod b;\n").expect("write");
    for i in 0..6 {
        std::fs::write(root.join("src/a.rs"), format!("pub fn a() -> u32 {{ {i} }}\n")).expect("write");
        std::fs::write(root.join("src/b.rs"), format!("pub fn b() -> u32 {{ {i} }}\n")).expect("write");
        git(&["add", "."]);
        git(&["commit", "-q", "-m", &format!("change {i}")]);
    }
    let opts = ficus_analyzer::Options { history: Some(100), ..Default::default() };
    let r = ficus_analyzer::analyze(root, &opts).expect("analyses");
    assert_eq!(r.stats.coupled_file_pairs, Some(1), "{:?}", r.diagnostics);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    // Not a git repository: a diagnostic, not a failure.
    let plain = tempfile::tempdir().expect("temp dir");
    std::fs::write(plain.path().join("Cargo.toml"), "[package]\nname = \"p\"\n").expect("write");
    std::fs::write(plain.path().join("lib.rs"), "pub fn f() {}\n").expect("write");
    let r = ficus_analyzer::analyze(plain.path(), &opts).expect("analyses");
    assert_eq!(r.stats.coupled_file_pairs, Some(0));
    assert!(r.diagnostics.iter().any(|d| d.message.starts_with("--history")), "{:?}", r.diagnostics);
}
