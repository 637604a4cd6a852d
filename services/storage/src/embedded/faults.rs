//! Faults a test injects into the embedded stores, to prove they fail safe: a failed or
//! slow fsync, projections failing like a full disk or hanging like a stuck one.
//!
//! The knobs exist only with the `test-hooks` feature (and in this crate's own tests);
//! without it [`FaultInjection`] is an empty value and every check below is a constant
//! `false`, so the release binary carries no way to inject a fault.

#[cfg(any(test, feature = "test-hooks"))]
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Faults to inject into the embedded write and read stores.
#[derive(Debug, Default)]
pub struct FaultInjection {
    /// The next fsync of the WAL reports an I/O error (as Linux reports EIO once, and then
    /// lets the next fsync "succeed" over pages it has dropped).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fail_next_fsync: AtomicBool,
    /// The next this many projections into the read store fail as a full disk does.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fail_projections: AtomicU32,
    /// While set, projections into the read store hang (a stuck disk or lock).
    #[cfg(any(test, feature = "test-hooks"))]
    pub stall_projections: AtomicBool,
    /// Every WAL fsync takes this many milliseconds longer (a slow disk).
    #[cfg(any(test, feature = "test-hooks"))]
    pub slow_fsync_ms: AtomicU64,
}

/// How often a stalled projection looks whether it may go on.
#[cfg(any(test, feature = "test-hooks"))]
const STALL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl FaultInjection {
    /// Waits while projections are stalled.
    pub(super) async fn stall(&self) {
        #[cfg(any(test, feature = "test-hooks"))]
        while self.stall_projections.load(Ordering::Acquire) {
            tokio::time::sleep(STALL_POLL).await;
        }
    }

    /// Whether this projection is to fail (and one fewer of the next will).
    pub(super) fn take_projection_fault(&self) -> bool {
        #[cfg(any(test, feature = "test-hooks"))]
        return self
            .fail_projections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        #[cfg(not(any(test, feature = "test-hooks")))]
        false
    }

    /// Whether this fsync is to fail (once).
    pub(super) fn take_fsync_fault(&self) -> bool {
        #[cfg(any(test, feature = "test-hooks"))]
        return self.fail_next_fsync.swap(false, Ordering::AcqRel);
        #[cfg(not(any(test, feature = "test-hooks")))]
        false
    }

    /// Makes this fsync as slow as asked.
    pub(super) fn slow_fsync(&self) {
        #[cfg(any(test, feature = "test-hooks"))]
        {
            let slow = self.slow_fsync_ms.load(Ordering::Acquire);
            if slow > 0 {
                std::thread::sleep(std::time::Duration::from_millis(slow));
            }
        }
    }

    /// The error SQLite gives when the disk is full (`SQLITE_FULL`), for a failed
    /// projection.
    pub(super) fn disk_full() -> crate::StoreError {
        crate::StoreError::Sqlite {
            what: "project events (injected fault)",
            source: rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full".into()),
            ),
        }
    }
}
