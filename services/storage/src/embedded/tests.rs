//! The embedded adapters run the port contracts.

use super::EmbeddedBackend;
use crate::contract;

fn backend(partitions: u32) -> (tempfile::TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), partitions).unwrap();
    (dir, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_store_honours_the_contract() {
    let (_dir, b) = backend(4);
    contract::write_store_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_store_never_oversells() {
    let (_dir, b) = backend(4);
    contract::write_store_concurrency_contract(b.write.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_honours_the_contract() {
    let (_dir, b) = backend(5);
    contract::event_log_contract(b.log.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_store_honours_the_contract() {
    let (_dir, b) = backend(1);
    contract::read_store_contract(b.read.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_keeps_offsets_and_partition_count_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = EmbeddedBackend::open(dir.path(), 3).unwrap();
        contract::event_log_contract(b.log.clone()).await;
    }
    let b = EmbeddedBackend::open(dir.path(), 3).unwrap();
    use crate::ports::EventLog;
    let mut total = 0;
    for p in 0..3 {
        total += b.log.end_offset(p).await.unwrap();
    }
    assert_eq!(total, 50);
    drop(b);
    assert!(
        EmbeddedBackend::open(dir.path(), 4).is_err(),
        "partition count is fixed"
    );
}
