//! The POS capture's PostgreSQL source against a real PostgreSQL (logical replication,
//! `wal_level=logical`), as `scripts/postgres.sh` starts it for the test command: the
//! table's rows first, then each committed transaction; a position not acknowledged is
//! handed over again after a restart; a lost slot (invalidated because the server kept too
//! little WAL) is rebuilt from the table. And end to end: sales inserted in the POS's
//! table reach a region exactly once across an agent restart.

mod common;

use std::time::Duration;

use pg_walstream::PgReplicationConnection;
use stockflow::agent::capture::postgres::{ExistingRows, PostgresCapture, PostgresSource};
use stockflow::agent::capture::{Batch, Columns, SalesSource};
use stockflow::agent::store::AgentStore;
use tokio_util::sync::CancellationToken;

fn postgres_url() -> String {
    std::env::var("STOCKFLOW_TEST_POSTGRES_URL").expect(
        "STOCKFLOW_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL \
         (scripts/postgres.sh up) and sets it",
    )
}

/// Runs `sql` on a plain connection; panics with the server's message.
fn sql(sql: &str) -> Vec<Vec<Option<String>>> {
    let mut conn =
        PgReplicationConnection::connect(&format!("{}?replication=false", postgres_url()))
            .expect("connect to PostgreSQL");
    let result = conn.exec(sql).expect("send SQL");
    assert!(result.is_ok(), "{sql}: {:?}", result.error_message());
    (0..result.ntuples())
        .map(|r| {
            (0..result.nfields())
                .map(|c| result.get_value(r, c))
                .collect()
        })
        .collect()
}

struct Fixture {
    capture: PostgresCapture,
    store: AgentStore,
    _dir: tempfile::TempDir,
}

fn fixture(name: &str) -> Fixture {
    let table = format!("pos_sales_{name}_{}", std::process::id());
    sql(&format!(
        "CREATE TABLE {table} (line_id text PRIMARY KEY, sku text, location text, qty integer, kind text)"
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    Fixture {
        capture: PostgresCapture {
            url: postgres_url(),
            table: format!("public.{table}"),
            publication: format!("{table}_pub"),
            slot: format!("{table}_slot"),
            columns: Columns::parse("id=line_id,quantity=qty").expect("columns"),
            existing_rows: ExistingRows::Record,
        },
        store: AgentStore::open(dir.path()).expect("agent store"),
        _dir: dir,
    }
}

impl Fixture {
    fn source(&self) -> (PostgresSource, CancellationToken) {
        let stop = CancellationToken::new();
        (
            PostgresSource::new(self.capture.clone(), self.store.clone(), stop.clone()),
            stop,
        )
    }

    fn insert(&self, rows: &[(&str, &str, i64, &str)]) {
        let values: Vec<String> = rows
            .iter()
            .map(|(id, sku, qty, kind)| format!("('{id}', '{sku}', 'l1', {qty}, '{kind}')"))
            .collect();
        sql(&format!(
            "INSERT INTO {} VALUES {}",
            self.capture.table,
            values.join(", ")
        ));
    }

    fn slot_status(&self) -> Option<String> {
        sql(&format!(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{}'",
            self.capture.slot
        ))
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
    }
}

/// The tests share the server's WAL: one invalidating slots must not run beside another.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for Fixture {
    /// Leaves no slot behind (a slot holds the server's WAL), pass or fail.
    fn drop(&mut self) {
        let Ok(mut conn) =
            PgReplicationConnection::connect(&format!("{}?replication=false", postgres_url()))
        else {
            return;
        };
        let slot = &self.capture.slot;
        // Ends the capture's session if it is still open, then drops its slot.
        for statement in [
            format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
            ),
            "SELECT pg_sleep(0.2)".to_string(),
            format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
            format!("DROP PUBLICATION IF EXISTS {}", self.capture.publication),
            format!("DROP TABLE IF EXISTS {}", self.capture.table),
        ] {
            let _ = conn.exec(&statement);
        }
    }
}

async fn next(source: &mut PostgresSource) -> Batch {
    tokio::time::timeout(Duration::from_secs(30), source.next_batch())
        .await
        .expect("a batch within 30 s")
        .expect("a batch")
}

fn ids(batch: &Batch) -> Vec<String> {
    let mut ids: Vec<String> = batch
        .rows
        .iter()
        .map(|r| r["line_id"].clone().expect("an id"))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_then_each_transaction_and_what_was_not_acknowledged_again() {
    let _server = SERVER.lock().await;
    let f = fixture("stream");
    f.insert(&[("a1", "S1", 2, "sale"), ("a2", "S2", 1, "return")]);

    let (mut source, stop) = f.source();
    let baseline = next(&mut source).await;
    assert_eq!(baseline.position, None, "baseline rows carry no position");
    assert_eq!(ids(&baseline), ["a1", "a2"]);
    let a1 = baseline
        .rows
        .iter()
        .find(|r| r["line_id"].as_deref() == Some("a1"))
        .expect("a1");
    assert_eq!(a1["qty"].as_deref(), Some("2"));
    assert_eq!(a1["kind"].as_deref(), Some("sale"));

    // Two POS transactions after the copy: each arrives whole, in commit order.
    f.insert(&[("b1", "S1", 1, "sale"), ("b2", "S3", 4, "sale")]);
    f.insert(&[("c1", "S2", 1, "sale")]);
    let first = next(&mut source).await;
    assert_eq!(ids(&first), ["b1", "b2"]);
    let first_position = first
        .position
        .expect("a streamed transaction has a position");
    source.committed(first_position);
    let second = next(&mut source).await;
    assert_eq!(ids(&second), ["c1"]);
    assert!(second.position.expect("position") > first_position);
    // The second is not acknowledged (the agent stops before its local commit); closing
    // tells the server what was.
    source.close().await;
    stop.cancel();
    drop(source);

    let (mut source, stop) = f.source();
    let again = next(&mut source).await;
    assert_eq!(
        ids(&again),
        ["c1"],
        "the unacknowledged transaction is handed over again, the acknowledged one is not"
    );
    source.committed(again.position.expect("position"));
    f.insert(&[("d1", "S1", 3, "sale")]);
    assert_eq!(ids(&next(&mut source).await), ["d1"]);
    // A crash (no close): what was not acknowledged comes again, and only that.
    stop.cancel();
    drop(source);
    let (mut source, stop) = f.source();
    f.insert(&[("e1", "S2", 1, "sale")]);
    // d1 was never acknowledged: it comes again. c1 may too (acknowledged here, but the
    // acknowledgement had not reached the server): the agent recognises it by id.
    loop {
        let replayed = next(&mut source).await;
        source.committed(replayed.position.expect("position"));
        match ids(&replayed).as_slice() {
            [id] if id == "c1" => continue,
            [id] if id == "d1" => break,
            other => panic!("expected c1 or d1 again, got {other:?}"),
        }
    }
    assert_eq!(ids(&next(&mut source).await), ["e1"]);
    source.close().await;
    stop.cancel();
    drop(source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_is_rebuilt_from_the_table() {
    let _server = SERVER.lock().await;
    let f = fixture("lost");
    f.insert(&[("a1", "S1", 1, "sale")]);
    let (mut source, stop) = f.source();
    assert_eq!(ids(&next(&mut source).await), ["a1"]);
    f.insert(&[("b1", "S1", 1, "sale")]);
    let b = next(&mut source).await;
    source.committed(b.position.expect("position"));
    source.close().await;
    stop.cancel();
    drop(source);

    // While the agent is away the POS sells on and the server recycles the WAL the slot
    // needs (max_slot_wal_keep_size is 64MB on the test server): the slot is lost.
    f.insert(&[("c1", "S2", 2, "sale")]);
    let scratch = format!("{}_wal", f.capture.table.replace("public.", ""));
    sql(&format!("CREATE TABLE {scratch} (n integer)"));
    for _ in 0..8 {
        sql(&format!("INSERT INTO {scratch} VALUES (1)"));
        sql("SELECT pg_switch_wal()");
    }
    sql("CHECKPOINT");
    sql(&format!("DROP TABLE {scratch}"));
    assert_eq!(
        f.slot_status().as_deref(),
        Some("lost"),
        "the test server invalidates the slot"
    );

    // The source drops the lost slot and copies the table again: every row, the ones the
    // agent holds (recognised by id downstream) and the one sold while it was away.
    let (mut source, stop) = f.source();
    let rebuilt = next(&mut source).await;
    assert_eq!(rebuilt.position, None);
    assert_eq!(ids(&rebuilt), ["a1", "b1", "c1"]);
    f.insert(&[("d1", "S1", 1, "sale")]);
    assert_eq!(
        ids(&next(&mut source).await),
        ["d1"],
        "and follows from there"
    );
    assert_eq!(f.slot_status().as_deref(), Some("reserved"));
    stop.cancel();
    drop(source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserted_sales_reach_the_region_once_across_an_agent_restart() {
    use stockflow::agent::AgentConfig;

    let _server = SERVER.lock().await;
    let p = common::Platform::start().await;
    p.location("l1", "north").await;
    p.stock("A", "l1", 100).await;
    let f = fixture("e2e");
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    common::write_agent_token(&p, &token_file);
    let start = || {
        common::start_agent(AgentConfig {
            capture: Some(f.capture.clone()),
            ..common::agent_config(&p.base, &dir.path().join("agent"), Some(token_file.clone()))
        })
    };
    let on_hand = async |want: i64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row: serde_json::Value = p
                .get("/v1/stock/A/l1")
                .await
                .json()
                .await
                .unwrap_or_default();
            if row["on_hand"] == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the region never reached on_hand {want}: {row}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // Rows before the agent first runs are recorded (ExistingRows::Record), then new ones.
    f.insert(&[("s1", "A", 1, "sale"), ("s2", "A", 2, "sale")]);
    let agent = start().await;
    on_hand(97).await;
    f.insert(&[("s3", "A", 3, "sale"), ("r1", "A", 1, "return")]);
    on_hand(95).await;
    agent.stop().await.expect("stops");

    // Sold while the agent is down, and after it is back: each once.
    f.insert(&[("s4", "A", 4, "sale")]);
    let agent = start().await;
    f.insert(&[("s5", "A", 5, "sale")]);
    on_hand(86).await;
    // Nothing more arrives later: every row was applied exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    on_hand(86).await;
    let history: serde_json::Value = p
        .get("/v1/movements?sku=A&location=l1")
        .await
        .json()
        .await
        .expect("movements");
    let moves = history["movements"].as_array().map_or(0, Vec::len);
    assert_eq!(
        moves,
        1 + 6,
        "the count, then one movement per captured row: {history}"
    );
    agent.stop().await.expect("stops");
}
