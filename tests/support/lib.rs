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

/// A server a test runs as a task of its own, and the sender that stops it.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address it bound.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Runs a server bound to `addr`: `run` gets the future that says when to stop (what
    /// every `Application::run_until_stopped` of the workspace takes).
    pub fn spawn<F>(addr: std::net::SocketAddr, run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F) -> Server
    where
        F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        Server { base: format!("http://{addr}"), addr, stop: Some(stop), task: tokio::spawn(run(stopped)) }
    }

    /// Stops it (in-flight requests finish) and checks it ran cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.expect("task").expect("server ran cleanly");
    }
}

/// PostgreSQL databases for tests: each test creates its own and it is dropped when the
/// test ends, even on panic. The server comes from `FICUS_TEST_PG_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached, tests
/// are skipped with a message — unless `FICUS_REQUIRE_PG` is set (CI sets it), in which
/// case they fail.
pub mod pg {
    use std::sync::atomic::{AtomicU32, Ordering};

    use sqlx::Connection;

    /// A PostgreSQL database made for one test, dropped when the test ends (even on panic).
    pub struct TestDatabase {
        admin_url: String,
        name: String,
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
            // Drop runs inside the test's runtime; do the async work on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin_url).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }

    fn pg_admin_url() -> String {
        std::env::var("FICUS_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Creates a fresh database named after `prefix`, with its URL; or None (skip) when PostgreSQL is unreachable and not required.
    pub async fn create_database(prefix: &str) -> Option<(TestDatabase, String)> {
        sqlx::any::install_default_drivers();
        let admin_url = pg_admin_url();
        let mut conn = match sqlx::AnyConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(err) => {
                if std::env::var_os("FICUS_REQUIRE_PG").is_some() {
                    panic!("PostgreSQL is required (FICUS_REQUIRE_PG is set) but {admin_url} is unreachable: {err}");
                }
                eprintln!(
                    "skipping: PostgreSQL at {admin_url} is unreachable ({err}); set FICUS_TEST_PG_URL to run it"
                );
                return None;
            }
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
        let url = match admin_url.rsplit_once('/') {
            Some((server, _db)) => format!("{server}/{name}"),
            None => panic!("FICUS_TEST_PG_URL {admin_url:?} has no database part"),
        };
        Some((TestDatabase { admin_url, name }, url))
    }
}

/// NATS with JetStream for tests: its URL from `FICUS_TEST_NATS_URL` (default
/// `nats://127.0.0.1:4222`). When it cannot be reached, tests are skipped with a message —
/// unless `FICUS_REQUIRE_NATS` is set (CI sets it), in which case they fail. Each test
/// uses a stream of its own and deletes it.
pub mod nats {
    /// The server's URL when it answers like a NATS server with JetStream; None (skip) when
    /// it is unreachable and not required.
    pub async fn url() -> Option<String> {
        use tokio::io::AsyncReadExt;
        let url = std::env::var("FICUS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let addr = url.trim_start_matches("nats://").to_string();
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
            let mut info = vec![0u8; 1024];
            let n = stream.read(&mut info).await.map_err(|e| e.to_string())?;
            let info = String::from_utf8_lossy(&info[..n]).to_string();
            if !info.starts_with("INFO ") {
                return Err(format!("not a NATS server: {info:?}"));
            }
            if !info.contains("\"jetstream\":true") {
                return Err("JetStream is not enabled (start nats-server with -js)".to_string());
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(3), probe)
            .await
            .unwrap_or_else(|_| Err("no answer in 3 s".into()));
        match outcome {
            Ok(()) => Some(url),
            Err(err) => {
                if std::env::var_os("FICUS_REQUIRE_NATS").is_some() {
                    panic!("NATS is required (FICUS_REQUIRE_NATS is set) but {url} is unusable: {err}");
                }
                eprintln!("skipping: NATS at {url} is unusable ({err}); set FICUS_TEST_NATS_URL to run it");
                None
            }
        }
    }
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
