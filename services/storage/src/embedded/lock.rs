//! One process per data directory.
//!
//! Two processes on one directory would each run a publisher and projectors over the same
//! log and read models and corrupt both (duplicate offsets, `database is locked`). The first
//! process to open a directory takes an exclusive `flock` on `<dir>/LOCK` and writes its
//! process id into it; the kernel drops the lock when that process exits, crash included, so
//! a stale file never blocks a restart. A second opener is refused with the holder's id.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::Context;
use crate::{Result, StoreError};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// Holding the open file holds the lock.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `dir` (which must exist), or explains who holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
            })
            .what("open the lock file")?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder wrote its id right after locking; an empty read only means it
                // is between those two steps.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::DataDirInUse {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "a process that is starting".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).what("lock the data directory"),
        }
        file.set_len(0).what("write the lock file")?;
        file.rewind().what("write the lock file")?;
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "unknown".into());
        writeln!(
            file,
            "pid {} ({exe}), started {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
        .what("write the lock file")?;
        file.sync_data().what("write the lock file")?;
        Ok(Self {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "names the holder: {msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
