//! Two `stockflow dev --store scylla` processes on one fresh keyspace, for the tests that
//! race or kill command APIs on Cassandra (`scylla_race.rs`, `scylla_transfers.rs`).

use stockflow_e2e::{DevProcess, TestKeyspace, free_addr, put_warehouse};
use stockflow_storage::scylla::ScyllaConfig;

/// Two `stockflow dev --store scylla` processes on one fresh keyspace, with location `dc`.
pub struct TwoProcesses {
    pub a: DevProcess,
    pub b: DevProcess,
    pub dirs: [tempfile::TempDir; 2],
    pub bases: [String; 2],
    pub client: reqwest::Client,
    pub config: ScyllaConfig,
}

/// Migrates keyspace `<prefix>_<pid>` and starts both processes on it; fails without
/// `STOCKFLOW_CQL_NODES`.
pub async fn two_processes(prefix: &str) -> TwoProcesses {
    let keyspace = TestKeyspace::migrated(prefix);
    let extra = keyspace.dev_args();
    let dir = || tempfile::tempdir().expect("a temporary data directory");
    let dirs = [dir(), dir()];
    let a = DevProcess::start_with(dirs[0].path(), free_addr(), &extra).await;
    let b = DevProcess::start_with(dirs[1].path(), free_addr(), &extra).await;
    let bases = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let client = reqwest::Client::new();
    put_warehouse(&client, &bases[0], "dc", "north").await;
    TwoProcesses {
        a,
        b,
        dirs,
        bases,
        client,
        config: keyspace.config(),
    }
}
