//! The contract of [`ImportStore`]: jobs round-trip, checkpoints keep progress and each
//! refused row once (a row re-run after a restart is refused again), unfinished jobs come
//! oldest first, and a checkpoint of no job fails. And of [`ImportPayloads`]: chunks
//! round-trip and are gone once removed.
#![allow(clippy::unwrap_used)]

use crate::ports::{
    ImportJob, ImportPayloads, ImportProgress, ImportRowError, ImportStatus, ImportStore,
};

fn job(id: &str, created_at_ms: i64) -> ImportJob {
    ImportJob {
        id: id.into(),
        owner: "{}".into(),
        digest: "ab".into(),
        rows_total: 10,
        bytes: 100,
        status: ImportStatus::Queued,
        progress: ImportProgress::default(),
        created_at_ms,
        finished_at_ms: None,
    }
}

/// Runs the job contract on an empty store.
pub(crate) async fn run(store: &dyn ImportStore) {
    store.create_import(&job("b", 2)).await.unwrap();
    store.create_import(&job("a", 1)).await.unwrap();
    assert_eq!(store.import("a").await.unwrap(), Some(job("a", 1)));
    assert_eq!(store.import("x").await.unwrap(), None);
    let refused = |row| ImportRowError {
        row,
        code: "validation_failed".into(),
        detail: "sku: too long".into(),
    };
    let progress = ImportProgress {
        rows_done: 4,
        next_byte: 40,
        applied: 2,
        replayed: 0,
        failed: 2,
    };
    let unfinished = || async {
        store
            .unfinished_imports()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect::<Vec<String>>()
    };
    assert_eq!(unfinished().await, ["a", "b"], "oldest first");
    store
        .checkpoint_import(
            "a",
            ImportStatus::Running,
            progress,
            &[refused(2), refused(4)],
            None,
        )
        .await
        .unwrap();
    // A restart re-runs rows 3-4: row 4 is refused again and recorded once.
    store
        .checkpoint_import("a", ImportStatus::Done, progress, &[refused(4)], Some(9))
        .await
        .unwrap();
    let a = store.import("a").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.progress, a.finished_at_ms),
        (ImportStatus::Done, progress, Some(9))
    );
    let rows: Vec<u64> = store
        .import_errors("a", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.row)
        .collect();
    assert_eq!(rows, vec![2, 4]);
    assert_eq!(store.import_errors("a", 2, 10).await.unwrap().len(), 1);
    assert_eq!(store.import_errors("a", 0, 1).await.unwrap().len(), 1);
    assert_eq!(unfinished().await, ["b"]);
    assert!(
        store
            .checkpoint_import("zz", ImportStatus::Done, progress, &[], None)
            .await
            .is_err()
    );
}

/// Runs the file contract on an empty store.
pub(crate) async fn payloads(store: &dyn ImportPayloads) {
    let big = vec![7u8; crate::ports::PAYLOAD_CHUNK_BYTES];
    store.put_chunk("f", 0, &big).await.unwrap();
    store.put_chunk("f", 1, b"tail\n").await.unwrap();
    assert_eq!(store.chunk("f", 0).await.unwrap(), Some(big));
    assert_eq!(
        store.chunk("f", 1).await.unwrap().as_deref(),
        Some(&b"tail\n"[..])
    );
    assert_eq!(store.chunk("f", 2).await.unwrap(), None, "past the end");
    assert_eq!(store.chunk("g", 0).await.unwrap(), None);
    store.remove_payload("f", 2).await.unwrap();
    assert_eq!(store.chunk("f", 0).await.unwrap(), None);
    assert_eq!(store.chunk("f", 1).await.unwrap(), None);
}
