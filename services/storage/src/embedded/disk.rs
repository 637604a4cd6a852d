//! Free space on the data directory's filesystem, which readiness checks: a full disk makes
//! every command fail (503), so a replica reports not ready before it gets there.

use std::path::{Path, PathBuf};

use crate::error::Context;
use crate::{Result, StoreError};

/// The free space one data directory needs to report ready.
#[derive(Debug, Clone)]
pub(super) struct Headroom {
    dir: PathBuf,
    min_free_bytes: u64,
}

impl Headroom {
    /// `min_free_bytes` on the filesystem holding `file`.
    pub(super) fn of(file: &Path, min_free_bytes: u64) -> Self {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self {
            dir,
            min_free_bytes,
        }
    }

    /// Fails when less than the minimum is free to unprivileged writers, and reports what
    /// is free as `stockflow_data_dir_free_bytes`.
    pub(super) fn check(&self) -> Result<()> {
        let free = free_bytes(&self.dir)?;
        metrics::gauge!("stockflow_data_dir_free_bytes").set(free as f64);
        if free < self.min_free_bytes {
            return Err(StoreError::LowDisk {
                dir: self.dir.clone(),
                free_mib: free >> 20,
                needed_mib: self.min_free_bytes >> 20,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Result<u64> {
    let stat = rustix::fs::statvfs(dir)
        .map_err(std::io::Error::from)
        .what("read the free space of the data directory")?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_room_is_ready_and_one_without_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("write.db");
        Headroom::of(&file, 0).check().expect("no minimum");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
        let err = Headroom::of(&file, u64::MAX)
            .check()
            .expect_err("nothing has that much room");
        assert!(
            matches!(err, StoreError::LowDisk { .. }) && err.to_string().contains("MiB free"),
            "{err}"
        );
    }
}
