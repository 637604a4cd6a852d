//! The side databases of a data directory: webhook subscriptions (`webhooks.db`: secrets,
//! log cursors, dead letters) and bulk imports (`imports.db`: jobs and checkpoints, with
//! the files of unfinished jobs in `imports/`).
//!
//! Both are copied after `read.db` and before `write.db`, for the reason `read.db` is:
//!
//! - a webhook cursor then only passes log records of commands the copied write side
//!   holds, which sealing keeps where they are;
//! - an import's checkpoint then only passes rows the copied write side applied. The rows
//!   after it run again on the restored platform, under the same idempotency keys, whose
//!   records the copied write side has: nothing applies twice. (Copied after, a checkpoint
//!   could pass rows the copy never applied, and the restore would skip them.)
//!
//! A job's file is removed when the job finishes, so a job unfinished in the copy may have
//! lost its file by the time the files are copied: the database is then copied again (the
//! job is done in that copy) until every unfinished job in it has its file. A job still
//! without one after a few copies lost it otherwise (a stopped platform's directory edited
//! by hand): it is copied as it is, and the restored worker ends it with a refused row
//! saying so, as the original's would.

use std::path::Path;

use rusqlite::Connection;

use super::{copy_database, sync_file};
use crate::Result;
use crate::error::Context;

/// The side databases, copied if the directory has them (one made before they existed
/// has not).
pub(super) const DATABASES: [&str; 2] = ["webhooks.db", "imports.db"];
/// Where import files are, one `<job id>.ndjson` each.
pub(super) const PAYLOADS: &str = "imports";
/// Copies of `imports.db` tried while jobs finish meanwhile.
const TRIES: usize = 5;

/// Copies the side databases of `data_dir` and the files of unfinished imports into `to`;
/// returns the bytes written.
pub(super) fn back_up(data_dir: &Path, to: &Path) -> Result<u64> {
    let mut bytes = 0;
    let webhooks = data_dir.join("webhooks.db");
    if webhooks.is_file() {
        bytes += copy_database(&webhooks, &to.join("webhooks.db"))?;
    }
    let imports = data_dir.join("imports.db");
    if !imports.is_file() {
        return Ok(bytes);
    }
    std::fs::create_dir_all(to.join(PAYLOADS)).what("create the imports directory")?;
    for attempt in 0..TRIES {
        let copy = to.join("imports.db");
        remove_database(&copy)?;
        let mut written = copy_database(&imports, &copy)?;
        let unfinished = unfinished_jobs(&copy)?;
        let mut complete = true;
        for id in &unfinished {
            let target = payload(to, id);
            if target.is_file() {
                continue;
            }
            match std::fs::copy(payload(data_dir, id), &target) {
                Ok(n) => {
                    sync_file(&target)?;
                    written += n;
                }
                // Finished since the copy: the next copy of the database says so.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => complete = false,
                Err(e) => return Err(e).what("copy an import's file"),
            }
        }
        if complete || attempt + 1 == TRIES {
            drop_files_of_finished(to, &unfinished)?;
            return Ok(bytes + written);
        }
    }
    Ok(bytes)
}

/// Counts for the manifest: subscriptions, and imports not done.
pub(super) fn counts(dir: &Path) -> Result<(u64, u64)> {
    let count = |db: &str, sql: &str| -> Result<u64> {
        let path = dir.join(db);
        if !path.is_file() {
            return Ok(0);
        }
        let conn = Connection::open(&path).what("open a copied side database")?;
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .what("count the rows of a copy")
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    Ok((
        count("webhooks.db", "SELECT COUNT(*) FROM subscriptions")?,
        count(
            "imports.db",
            "SELECT COUNT(*) FROM imports WHERE status <> 'done'",
        )?,
    ))
}

fn payload(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(PAYLOADS).join(format!("{id}.ndjson"))
}

fn unfinished_jobs(db: &Path) -> Result<Vec<String>> {
    let conn = Connection::open(db).what("open the copied imports")?;
    let mut st = conn
        .prepare("SELECT id FROM imports WHERE status <> 'done' ORDER BY id")
        .what("list unfinished imports")?;
    st.query_map([], |r| r.get(0))
        .and_then(Iterator::collect)
        .what("list unfinished imports")
}

/// Removes a database copy from an earlier try (and its WAL files).
fn remove_database(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).what("remove an earlier copy");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes files copied on an earlier try for jobs the final copy has as done.
fn drop_files_of_finished(to: &Path, unfinished: &[String]) -> Result<()> {
    for entry in std::fs::read_dir(to.join(PAYLOADS)).what("read the copied imports")? {
        let path = entry.what("read the copied imports")?.path();
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !unfinished.iter().any(|u| u == id) {
            std::fs::remove_file(&path).what("remove a finished import's file")?;
        }
    }
    Ok(())
}
