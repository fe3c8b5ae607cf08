//! The `ficus` binary's allocator is mimalloc built with lazily committed arenas
//! (`.cargo/config.toml` passes `-DMI_DEFAULT_ARENA_EAGER_COMMIT=0` through `CFLAGS`). Built
//! without it (a `CFLAGS` of one's own in the environment replaces the project's; `cargo install`
//! ignores project config), the proxy's resident memory doubles: 12 -> 23 MiB with one route and
//! 27 -> 47 MiB with 1,000 in the benchmark build. mimalloc prints its options when asked.

use std::process::Command;

#[test]
fn mimalloc_commits_its_arenas_lazily() {
    let out = Command::new(env!("CARGO_BIN_EXE_ficus"))
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("option 'arena_eager_commit': 0"),
        "mimalloc was built without -DMI_DEFAULT_ARENA_EAGER_COMMIT=0 (is CFLAGS set in the \
         environment? it replaces .cargo/config.toml's); its options:\n{stderr}"
    );
}
