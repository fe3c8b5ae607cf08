//! Helpers shared by the end-to-end tests: where the workspace is, what its README
//! tells a newcomer to run, and running a command as a user would.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding README.md).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The shell commands in the README's fenced code blocks, in order, one per line.
pub fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && (trimmed.starts_with("cargo ") || trimmed.starts_with("./") || trimmed.starts_with("bash ")) {
            commands.push(trimmed.to_string());
        }
    }
    commands
}

/// The README's two opening commands: (run the main job, run all tests).
pub fn readme_main_commands() -> (String, String) {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let commands = readme_commands(&readme);
    let run = commands.iter().find(|c| c.starts_with("cargo run")).expect("README names a `cargo run` command").clone();
    let test =
        commands.iter().find(|c| c.starts_with("cargo test")).expect("README names a `cargo test` command").clone();
    (run, test)
}

#[cfg(test)]
mod tests {
    use super::readme_commands;

    #[test]
    fn commands_come_only_from_code_blocks() {
        let text = "cargo run outside\n```sh\ncargo run -p shop -- --seed\n  cargo test --workspace\necho hi\n```\n";
        assert_eq!(readme_commands(text), ["cargo run -p shop -- --seed", "cargo test --workspace"]);
    }
}
