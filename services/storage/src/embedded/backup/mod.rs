//! Backups of an embedded data directory while the platform serves it, and their restore.
//!
//! Each database is copied with SQLite's online backup API in one step: one read
//! transaction, so each copy is a consistent snapshot and the platform's writers never
//! wait. The snapshots are taken at different moments, in the order that lets them be
//! made to agree:
//!
//! 1. `read.db` first: everything it has projected came from log records of commands
//!    committed before it was copied.
//! 2. The side databases (`webhooks.db`, `imports.db` and the files of unfinished imports)
//!    next, for the same reason ([`side`]).
//! 3. `write.db` next: the truth. Its outbox holds every change not yet published.
//! 4. `log.db` last: it holds everything published before `write.db` was copied (what the
//!    outbox no longer has), and perhaps records of commands committed after it.
//!
//! The last are cut out of the copied log ("sealing"): a record is part of the backup when
//! its key's version in the copied `write.db` is at least the record's. Kept, a restored
//! platform would project a change its write side never made, and then ignore, as a stale
//! version, the real change that reuses that version. The records of a partition are cut
//! from the first foreign one; the backed records after it move up, so offsets stay
//! contiguous, and the partition's next offset is kept as a floor so it never goes back
//! below what the copied read models already consumed. Records published twice (an
//! outbox entry republished after the copy) are harmless: projections are version-guarded.
//!
//! A backup is a directory: the databases, the development keys (`auth/`) if any, the
//! files of unfinished imports (`imports/`), and `stockflow-backup.json`, written last,
//! without which restore refuses the directory.

mod side;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use stockflow_domain::event::BusEvent;

use crate::error::Context;
use crate::{Result, StoreError, now_ms};

/// The manifest's file name: its presence marks a complete backup.
pub const MANIFEST: &str = "stockflow-backup.json";
/// The layout this code writes and reads.
const FORMAT: u32 = 1;
/// The databases every data directory has (the side databases are in [`side`]).
const DATABASES: [&str; 3] = ["read.db", "write.db", "log.db"];
/// Directories copied as they are (the development signing keys of `--auth-dev`).
const FILE_DIRS: [&str; 1] = ["auth"];
/// How long a copy waits for a lock before trying again, and how often.
const BUSY_RETRY: Duration = Duration::from_millis(50);
const BUSY_TRIES: u32 = 600;

/// What a backup holds, as written to its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout version.
    pub format: u32,
    /// When the backup was taken (Unix milliseconds).
    pub created_at_ms: i64,
    /// The data directory it was taken from.
    pub source: String,
    /// Stock keys in the write side.
    pub stock_keys: u64,
    /// Reservations in the write side.
    pub reservations: u64,
    /// Idempotency records in the write side.
    pub idempotency_records: u64,
    /// Outbox entries still to publish.
    pub outbox_entries: u64,
    /// Log records kept.
    pub log_records: u64,
    /// Webhook subscriptions.
    #[serde(default)]
    pub subscriptions: u64,
    /// Imports not done (they resume on the restored platform).
    #[serde(default)]
    pub unfinished_imports: u64,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// Log records of commands newer than the write side's copy, cut out.
    pub records_cut: u64,
    /// Backed log records that moved to a lower offset behind a cut one.
    pub records_moved: u64,
    /// Bytes written.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Copies the data directory `data_dir` into the new directory `to`, while a platform may
/// be serving `data_dir`.
pub fn backup(data_dir: &Path, to: &Path) -> Result<BackupReport> {
    let started = Instant::now();
    for db in DATABASES {
        if !data_dir.join(db).is_file() {
            return Err(refused(
                data_dir,
                format!("no {db}: not an embedded data directory"),
            ));
        }
    }
    create_empty_dir(to)?;
    // In the order of the module's note.
    let mut bytes = copy_database(&data_dir.join("read.db"), &to.join("read.db"))?;
    bytes += side::back_up(data_dir, to)?;
    for db in ["write.db", "log.db"] {
        bytes += copy_database(&data_dir.join(db), &to.join(db))?;
    }
    for dir in FILE_DIRS {
        bytes += copy_dir(&data_dir.join(dir), &to.join(dir))?;
    }
    let (records_cut, records_moved) = seal_log(to)?;
    let manifest = Manifest {
        format: FORMAT,
        created_at_ms: now_ms(),
        source: data_dir.display().to_string(),
        ..count(to)?
    };
    write_manifest(to, &manifest)?;
    Ok(BackupReport {
        manifest,
        records_cut,
        records_moved,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Restores the backup at `from` into `data_dir`, which must not exist or be empty: a
/// restore never mixes with data it would have to overwrite.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest> {
    let manifest = read_manifest(from)?;
    let databases: Vec<&str> = DATABASES
        .into_iter()
        .chain(
            side::DATABASES
                .into_iter()
                .filter(|db| from.join(db).is_file()),
        )
        .collect();
    for db in &databases {
        check_integrity(&from.join(db))?;
    }
    create_empty_dir(data_dir)?;
    for db in &databases {
        copy_database(&from.join(db), &data_dir.join(db))?;
    }
    for dir in FILE_DIRS.into_iter().chain([side::PAYLOADS]) {
        copy_dir(&from.join(dir), &data_dir.join(dir))?;
    }
    let restored = count(data_dir)?;
    if (
        restored.stock_keys,
        restored.reservations,
        restored.log_records,
        restored.subscriptions,
        restored.unfinished_imports,
    ) != (
        manifest.stock_keys,
        manifest.reservations,
        manifest.log_records,
        manifest.subscriptions,
        manifest.unfinished_imports,
    ) {
        return Err(refused(
            data_dir,
            format!("the restored copy differs from the manifest: {restored:?}"),
        ));
    }
    Ok(manifest)
}

/// The manifest of the backup at `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        refused(
            dir,
            format!("no readable {MANIFEST} ({e}): not a complete backup"),
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| refused(dir, format!("{MANIFEST} is not a manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(refused(
            dir,
            format!(
                "backup format {} (this build reads {FORMAT})",
                manifest.format
            ),
        ));
    }
    Ok(manifest)
}

fn refused(path: &Path, reason: String) -> StoreError {
    StoreError::Backup {
        path: path.to_path_buf(),
        reason,
    }
}

fn create_empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).what("read the target directory")?;
        if entries.next().is_some() {
            return Err(refused(
                dir,
                "exists and is not empty (nothing is overwritten)".into(),
            ));
        }
    }
    std::fs::create_dir_all(dir).what("create the target directory")
}

/// Copies one database in one step of the online backup API, and makes the copy durable.
fn copy_database(from: &Path, to: &Path) -> Result<u64> {
    // Read-write without create: a read-only connection cannot open a WAL database whose
    // `-shm` is gone (a stopped platform's). Nothing is written through it.
    let source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .what("open a database to back up")?;
    source
        .busy_timeout(Duration::from_secs(5))
        .what("configure a backup connection")?;
    let mut target = Connection::open(to).what("create a database copy")?;
    {
        let copy = Backup::new(&source, &mut target).what("start a database copy")?;
        let mut tries = 0;
        // All pages in one step: one read transaction, one snapshot.
        while copy.step(-1).what("copy a database")? != StepResult::Done {
            tries += 1;
            if tries >= BUSY_TRIES {
                return Err(refused(from, "stayed locked for 30 s; try again".into()));
            }
            std::thread::sleep(BUSY_RETRY);
        }
    }
    // The copy is a WAL database like its source: fold the WAL in so the file stands alone.
    target
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .what("checkpoint a database copy")?;
    drop(target);
    sync_file(to)?;
    Ok(std::fs::metadata(to).map_or(0, |m| m.len()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<u64> {
    if !from.is_dir() {
        return Ok(0);
    }
    std::fs::create_dir_all(to).what("create a directory in the copy")?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).what("read a directory to copy")? {
        let entry = entry.what("read a directory to copy")?;
        if entry
            .file_type()
            .what("read a directory to copy")?
            .is_file()
        {
            let target = to.join(entry.file_name());
            bytes += std::fs::copy(entry.path(), &target).what("copy a file")?;
            sync_file(&target)?;
        }
    }
    Ok(bytes)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .what("sync a copied file")
}

/// Cuts the records of commands the copied write side does not hold out of the copied
/// log; returns (records cut, records moved).
fn seal_log(dir: &Path) -> Result<(u64, u64)> {
    let mut log = Connection::open(dir.join("log.db")).what("open the copied log")?;
    // A log an earlier version wrote (backed up before an upgrade) gains the column the
    // moved records carry, as opening it would.
    super::log::add_headers_column(&log)?;
    log.execute(
        "ATTACH DATABASE ?1 AS w",
        [dir.join("write.db").display().to_string()],
    )
    .what("attach the copied write side")?;
    let tx = log.transaction().what("begin sealing the log")?;
    let partitions: Vec<i64> = {
        let mut st = tx
            .prepare("SELECT DISTINCT partition FROM records ORDER BY partition")
            .what("list the log's partitions")?;
        st.query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .what("list the log's partitions")?
    };
    let (mut cut, mut moved) = (0, 0);
    for partition in partitions {
        let records = records_of(&tx, partition)?;
        let mut first_foreign = None;
        for (i, record) in records.iter().enumerate() {
            if !backed(&tx, &record.value)? {
                first_foreign = Some(i);
                break;
            }
        }
        let Some(first) = first_foreign else { continue };
        let floor = records[first].offset;
        tx.execute(
            "DELETE FROM records WHERE partition = ?1 AND offset >= ?2",
            params![partition, floor],
        )
        .what("cut the log")?;
        let mut next = floor;
        for record in &records[first..] {
            if !backed(&tx, &record.value)? {
                cut += 1;
                continue;
            }
            tx.execute(
                "INSERT INTO records (partition, offset, key, value, timestamp_ms, headers) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![partition, next, record.key, record.value, record.timestamp_ms, record.headers],
            )
            .what("move a log record")?;
            moved += u64::from(next != record.offset);
            next += 1;
        }
        tx.execute(
            "INSERT INTO log_meta (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            params![format!("floor:{partition}"), floor],
        )
        .what("keep the partition's floor")?;
    }
    tx.commit().what("commit the sealed log")?;
    log.execute("DETACH DATABASE w", [])
        .what("detach the copied write side")?;
    log.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .what("checkpoint the sealed log")?;
    drop(log);
    sync_file(&dir.join("log.db"))?;
    Ok((cut, moved))
}

struct StoredRecord {
    offset: i64,
    key: String,
    value: Vec<u8>,
    timestamp_ms: i64,
    /// As stored: moved, never read.
    headers: Option<String>,
}

fn records_of(conn: &Connection, partition: i64) -> Result<Vec<StoredRecord>> {
    let mut st = conn
        .prepare(
            "SELECT offset, key, value, timestamp_ms, headers FROM records WHERE partition = ?1 ORDER BY offset",
        )
        .what("read the copied log")?;
    st.query_map([partition], |r| {
        Ok(StoredRecord {
            offset: r.get(0)?,
            key: r.get(1)?,
            value: r.get(2)?,
            timestamp_ms: r.get(3)?,
            headers: r.get(4)?,
        })
    })
    .and_then(Iterator::collect)
    .what("read the copied log")
}

/// Whether the copied write side made the change a record carries. A record that is not
/// an event stays: the projector sends it to the dead-letter queue, as it would have.
fn backed(conn: &Connection, value: &[u8]) -> Result<bool> {
    // The bare event: the embedded log keeps headers, so no structured CloudEvent (the
    // Fluvio form) is ever written to it.
    let Ok(event) = serde_json::from_slice::<BusEvent>(value) else {
        return Ok(true);
    };
    let (version, stored): (u64, Option<i64>) = match &event {
        BusEvent::Stock(e) => (
            e.version,
            conn.prepare_cached("SELECT version FROM w.stock WHERE sku = ?1 AND location = ?2")
                .and_then(|mut st| {
                    st.query_row(params![e.sku.as_str(), e.location.as_str()], |r| r.get(0))
                        .optional()
                })
                .what("read a key's version in the copied write side")?,
        ),
        BusEvent::Catalog(e) => (
            e.version,
            conn.prepare_cached("SELECT version FROM w.skus WHERE sku = ?1")
                .and_then(|mut st| st.query_row([e.sku.as_str()], |r| r.get(0)).optional())
                .what("read a SKU's version in the copied write side")?,
        ),
        BusEvent::Policy(e) => (
            e.version,
            conn.prepare_cached("SELECT version FROM w.sku_policies WHERE sku = ?1")
                .and_then(|mut st| st.query_row([e.sku.as_str()], |r| r.get(0)).optional())
                .what("read a SKU policy's version in the copied write side")?,
        ),
    };
    Ok(stored.is_some_and(|v| u64::try_from(v).is_ok_and(|v| v >= version)))
}

/// The counts a manifest records, read from the databases in `dir`.
fn count(dir: &Path) -> Result<Manifest> {
    let write = Connection::open(dir.join("write.db")).what("open a copied write side")?;
    let log = Connection::open(dir.join("log.db")).what("open a copied log")?;
    let (subscriptions, unfinished_imports) = side::counts(dir)?;
    let n = |conn: &Connection, sql: &str| -> Result<u64> {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .what("count the rows of a copy")
            .map(|n| u64::try_from(n).unwrap_or(0))
    };
    Ok(Manifest {
        format: FORMAT,
        created_at_ms: 0,
        source: String::new(),
        stock_keys: n(&write, "SELECT COUNT(*) FROM stock")?,
        reservations: n(&write, "SELECT COUNT(*) FROM reservations")?,
        idempotency_records: n(&write, "SELECT COUNT(*) FROM idempotency")?,
        outbox_entries: n(&write, "SELECT COUNT(*) FROM outbox")?,
        log_records: n(&log, "SELECT COUNT(*) FROM records")?,
        subscriptions,
        unfinished_imports,
    })
}

fn check_integrity(path: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .what("open a database of the backup")?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .what("check a database of the backup")?;
    if verdict != "ok" {
        return Err(refused(path, format!("integrity check failed: {verdict}")));
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path: PathBuf = dir.join(MANIFEST);
    let text = serde_json::to_vec_pretty(manifest).map_err(|source| StoreError::Encode {
        what: "a backup manifest",
        source,
    })?;
    std::fs::write(&path, text).what("write the backup manifest")?;
    sync_file(&path)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .what("sync the backup directory")
}

#[cfg(test)]
mod tests;
