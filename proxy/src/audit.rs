//! The audit log: every change of a route's stage or percent — through the admin API, a reload of
//! the config file, or the rollout controller — with its time, from, to, why and by whom.
//!
//! Entries are appended to a file as one JSON object per line (`proxy.audit_log`, by default
//! `<config stem>.audit.jsonl` beside the config), written and flushed before the change is
//! reported done, and the last [`KEPT`] are kept in memory for `GET /audit`. At start the file's
//! tail is read back, so the history survives a restart.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Entries kept in memory.
pub const KEPT: usize = 1000;

/// The longest reason a stage change may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A reason as the audit log keeps it: at most [`MAX_REASON_CHARS`] characters, control
/// characters (newlines, ESC, NUL…) written as escapes, so a reason cannot forge lines in
/// the text log or the terminal. Longer reasons are refused, not cut.
pub fn clean_reason(reason: &str) -> Result<String, String> {
    let n = reason.chars().count();
    if n > MAX_REASON_CHARS {
        return Err(format!("reason is {n} characters long; at most {MAX_REASON_CHARS} are kept"));
    }
    Ok(reason.chars().map(|c| if c.is_control() { c.escape_default().collect() } else { c.to_string() }).collect())
}
/// How much of the file's end is read back at start.
const TAIL_BYTES: u64 = 512 * 1024;

/// A route's stage and percent at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// monolith | shadow | canary | service
    pub stage: String,
    /// The canary percent.
    pub percent: f64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stage == "canary" { write!(f, "canary {}%", self.percent) } else { f.write_str(&self.stage) }
    }
}

/// One transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When, in RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The route.
    pub route: String,
    /// Before.
    pub from: Position,
    /// After.
    pub to: Position,
    /// Why: the operator's reason, the rollout's measurements, or the reload.
    pub why: String,
    /// Who: `rollout`, `config file`, or the admin API's caller (`x-ficus-actor`) and address.
    pub by: String,
}

/// The log: a file and the last entries.
pub struct AuditLog {
    path: PathBuf,
    recent: Mutex<VecDeque<Entry>>,
}

impl AuditLog {
    /// Opens the log at `path`, reading back the last entries of an existing file.
    pub fn open(path: PathBuf) -> AuditLog {
        let recent = match read_tail(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => {
                tracing::error!("cannot read the audit log {}: {e}", path.display());
                VecDeque::new()
            }
        };
        AuditLog { path, recent: Mutex::new(recent) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a transition that may only happen once its record is on disk: appended and
    /// synced, or the error (and nothing is recorded).
    pub fn record_durably(&self, entry: Entry) -> std::io::Result<()> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        append_line(&self.path, &entry)?;
        log_entry(&entry);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(entry);
        Ok(())
    }

    /// Records a transition: appended to the file (a failure to write is logged as an error, and
    /// the entry is still kept in memory and in the process log).
    pub fn record(&self, entry: Entry) {
        log_entry(&entry);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = append_line(&self.path, &entry) {
            tracing::error!("cannot write the audit log {}: {e}", self.path.display());
        }
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The last entries, oldest first, of one route or of all.
    pub fn recent(&self, route: Option<&str>) -> Vec<Entry> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().filter(|e| route.is_none_or(|r| e.route == r)).cloned().collect()
    }
}

fn log_entry(entry: &Entry) {
    tracing::info!(
        target: "ficus::audit",
        route = %entry.route,
        from = %entry.from,
        to = %entry.to,
        by = %entry.by,
        "stage change: {}",
        entry.why
    );
}

fn append_line(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
    // After a torn last line (a crash mid-write), start on a line of its own.
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    // One write of the whole line: appends of concurrent writers do not interleave.
    f.write_all(&line)?;
    f.sync_data()
}

fn read_tail(path: &Path) -> std::io::Result<VecDeque<Entry>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    // Bytes, not text: the tail may start inside a character.
    let mut lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    if start > 0 {
        lines.next(); // Most likely cut.
    }
    let mut out = VecDeque::new();
    for line in lines {
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => {
                if out.len() == KEPT {
                    out.pop_front();
                }
                out.push_back(e);
            }
            Err(e) => tracing::warn!("{}: skipping an audit line that does not parse: {e}", path.display()),
        }
    }
    Ok(out)
}

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T15:04:05.123Z`.
pub fn now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

/// Formats seconds since the Unix epoch (proleptic Gregorian calendar, days to civil date after
/// Howard Hinnant's `civil_from_days`).
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century divisible by 400), 12:34:56.
        assert_eq!(rfc3339(951_827_696, 7), "2000-02-29T12:34:56.007Z");
        // 2026-11-26T15:29:25Z, the day this was written.
        assert_eq!(rfc3339(1_795_706_965, 999), "2026-11-26T15:29:25.999Z");
    }

    fn entry(route: &str, n: usize) -> Entry {
        Entry {
            time: now(),
            route: route.to_owned(),
            from: Position { stage: "monolith".into(), percent: 0.0 },
            to: Position { stage: "canary".into(), percent: n as f64 },
            why: format!("step {n}"),
            by: "test".into(),
        }
    }

    #[test]
    fn entries_are_appended_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ficus.audit.jsonl");
        let log = AuditLog::open(path.clone());
        log.record(entry("a", 1));
        log.record(entry("b", 2));
        log.record(entry("a", 3));
        assert_eq!(log.recent(Some("a")).len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        // A torn last line (a crash mid-write) is skipped, not fatal, and the next entry starts
        // on a line of its own.
        std::fs::write(&path, format!("{text}{{\"time\":")).unwrap();
        let again = AuditLog::open(path.clone());
        assert_eq!(again.recent(None), log.recent(None));
        assert_eq!(again.recent(None)[2].why, "step 3");
        again.record(entry("a", 4));
        assert_eq!(AuditLog::open(path.clone()).recent(Some("a")).len(), 3);
    }

    #[test]
    fn a_tail_that_starts_inside_a_character_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = AuditLog::open(path.clone());
        let mut e = entry("a", 1);
        e.why = "×".repeat(200);
        // More than TAIL_BYTES of two-byte characters: the tail starts at an odd offset somewhere.
        for _ in 0..(TAIL_BYTES as usize / 400 + 10) {
            log.record(e.clone());
        }
        // Append short entries until the tail's first byte is inside a character.
        let inside = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            (bytes[bytes.len() - TAIL_BYTES as usize] & 0xC0) == 0x80
        };
        let mut shifts = 0;
        loop {
            let mut last = entry("b", 2);
            last.why = ".".repeat(shifts % 7);
            log.record(last);
            if inside(&path) {
                break;
            }
            shifts += 1;
            assert!(shifts < 200, "the tail never started inside a character");
        }
        let again = AuditLog::open(path);
        assert!(again.recent(None).len() > 100);
        assert_eq!(again.recent(None).last(), log.recent(None).last());
    }

    #[test]
    fn reasons_are_bounded_and_their_control_characters_escaped() {
        assert_eq!(clean_reason("diffs clean for a day").unwrap(), "diffs clean for a day");
        assert_eq!(
            clean_reason("a\nINFO forged line\r\u{1b}[31m\0").unwrap(),
            "a\\nINFO forged line\\r\\u{1b}[31m\\u{0}"
        );
        assert_eq!(clean_reason(&"é".repeat(MAX_REASON_CHARS)).unwrap().chars().count(), MAX_REASON_CHARS);
        assert!(clean_reason(&"x".repeat(MAX_REASON_CHARS + 1)).unwrap_err().contains("at most 500"));
    }
}
