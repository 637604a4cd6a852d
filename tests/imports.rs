//! Bulk import and export as an ERP meets them, on `stockflow dev`: an NDJSON file of
//! locations, SKUs, counts and adjustments (with a few bad rows) is uploaded, the platform
//! is killed with `kill -9` while the rows run, and after the restart the job finishes
//! from its checkpoint: every key holds exactly what the file says (nothing applied twice,
//! nothing lost), the refused rows are listed by row number, and the same file uploaded
//! again applies nothing. The stock export then serves exactly those rows, as NDJSON and
//! CSV, with the bus offsets they reflect. A backup taken while a job runs restores it:
//! the restored platform finishes it from the copied checkpoint, each row applied once. On
//! ScyllaDB, a job uploaded to one process whose process is killed is finished by another
//! on the same keyspace, from the file kept there.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockflow_e2e::{DevProcess, TestKeyspace, free_addr, stockflow_output};
use stockflow_storage::ports::WriteStore;
use stockflow_storage::scylla::ScyllaBackend;

const SKUS: usize = 200;
const LOCATIONS: [(&str, &str); 6] = [
    ("l0", "north"),
    ("l1", "north"),
    ("l2", "north"),
    ("l3", "north"),
    ("l4", "north"),
    ("l5", "south"),
];
const ADJUSTMENTS: usize = 16_000;

/// The file, its expected on-hand per key, the numbers of the rows that must be refused
/// (with their codes), and how many stock rows are valid.
struct ImportFile {
    text: String,
    expected: BTreeMap<(String, String), i64>,
    refused: Vec<(u64, &'static str)>,
    valid_stock_rows: u64,
    catalog_rows: u64,
}

fn import_file() -> ImportFile {
    let mut lines: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    let mut expected = BTreeMap::new();
    for (id, region) in LOCATIONS {
        lines.push(
            json!({"type": "location", "location": id, "region": region, "kind": "warehouse", "name": id})
                .to_string(),
        );
    }
    for s in 0..SKUS {
        lines.push(
            json!({"type": "sku", "sku": format!("SKU-{s}"), "name": format!("Item {s}")})
                .to_string(),
        );
    }
    let catalog_rows = lines.len() as u64;
    let keys: Vec<(String, String)> = (0..SKUS)
        .flat_map(|s| {
            LOCATIONS
                .iter()
                .map(move |(l, _)| (format!("SKU-{s}"), (*l).to_string()))
        })
        .collect();
    let mut valid_stock_rows = 0;
    for (i, (sku, location)) in keys.iter().enumerate() {
        let on_hand = (i as i64 * 7) % 50 + 10;
        lines.push(
            json!({"type": "count", "sku": sku, "location": location, "on_hand": on_hand})
                .to_string(),
        );
        expected.insert((sku.clone(), location.clone()), on_hand);
        valid_stock_rows += 1;
    }
    for i in 0..ADJUSTMENTS {
        // Bad rows at known places, each a different mistake.
        match i {
            1_000 => {
                lines.push("{\"type\": \"adjustment\", \"sku\": ".into());
                refused.push((lines.len() as u64, "malformed_body"));
            }
            4_321 => {
                lines.push(json!({"type": "adjustment", "sku": "SKU-1", "location": "l1", "delta": 1, "reason": "magic"}).to_string());
                refused.push((lines.len() as u64, "invalid_request"));
            }
            7_000 => {
                lines.push(json!({"type": "adjustment", "sku": "SKU-1", "location": "nowhere", "delta": 1, "reason": "receipt"}).to_string());
                refused.push((lines.len() as u64, "location_not_found"));
            }
            9_999 => {
                lines.push(json!({"type": "teleport", "sku": "SKU-1"}).to_string());
                refused.push((lines.len() as u64, "invalid_request"));
            }
            12_000 => lines.push(String::new()),
            _ => {}
        }
        let (sku, location) = &keys[(i * 31) % keys.len()];
        let delta = (i % 5) as i64 + 1;
        lines.push(
            json!({"type": "adjustment", "sku": sku, "location": location, "delta": delta, "reason": "receipt", "reference": format!("asn-{i}")})
                .to_string(),
        );
        *expected.get_mut(&(sku.clone(), location.clone())).unwrap() += delta;
        valid_stock_rows += 1;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    ImportFile {
        text,
        expected,
        refused,
        valid_stock_rows,
        catalog_rows,
    }
}

async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: String,
) -> reqwest::Response {
    client
        .post(format!("{base}/v1/imports"))
        .header("idempotency-key", key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn job(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let r = client
        .get(format!("{base}/v1/imports/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn wait_until(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job(client, base, id).await;
        if done(&j) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "the import did not get there: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The export's rows by key, and its offsets header.
async fn export(
    client: &reqwest::Client,
    base: &str,
    query: &str,
) -> (BTreeMap<(String, String), Value>, String) {
    let r = client
        .get(format!("{base}/v1/exports/stock{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let offsets = r.headers()["stockflow-offsets"]
        .to_str()
        .unwrap()
        .to_string();
    let text = r.text().await.unwrap();
    let rows = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                (
                    v["sku"].as_str().unwrap().to_string(),
                    v["location"].as_str().unwrap().to_string(),
                ),
                v,
            )
        })
        .collect();
    (rows, offsets)
}

fn on_hand(rows: &BTreeMap<(String, String), Value>) -> BTreeMap<(String, String), i64> {
    rows.iter()
        .map(|(k, v)| (k.clone(), v["on_hand"].as_i64().unwrap()))
        .collect()
}

/// Every record offset the header names, summed (it only grows).
fn offsets_total(header: &str) -> u64 {
    header
        .split('|')
        .filter(|c| c.starts_with("read-models@"))
        .flat_map(|c| c.split_once(';').map(|(_, p)| p.to_string()))
        .flat_map(|p| p.split(',').map(str::to_string).collect::<Vec<_>>())
        .map(|p| p.split_once('=').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_survives_kill_9_applies_each_row_once_and_the_export_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let rate = ["--import-rows-per-second", "4000"];
    let dev = DevProcess::start_with(dir.path(), addr, &rate).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let file = import_file();
    let rows_total = file.text.lines().count() as u64;

    let r = upload(&client, &base, "load-1", file.text.clone()).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["rows_total"], rows_total);
    assert_eq!(first["status"], "queued");
    // The upload's retry answers the same job; another file under its key is refused.
    let again = upload(&client, &base, "load-1", file.text.clone()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = upload(&client, &base, "load-1", "{}\n".into()).await;
    assert_eq!(other.status(), 422);

    // kill -9 while rows are running.
    let mid = wait_until(&client, &base, &id, |j| {
        j["rows_done"].as_u64().unwrap() >= 5_000
    })
    .await;
    assert_ne!(
        mid["status"], "done",
        "the import ran too fast to be interrupted: {mid}"
    );
    // Past the checkpoint: rows that ran but were never checkpointed run again after the
    // restart, and must be answered from their records.
    tokio::time::sleep(Duration::from_millis(120)).await;
    dev.kill_hard();
    let started = Instant::now();
    let dev = DevProcess::start_with(dir.path(), addr, &rate).await;
    let done = wait_until(&client, &base, &id, |j| j["status"] == "done").await;
    let took = started.elapsed();
    eprintln!("import after restart: {done} in {took:?}");
    assert_eq!(done["rows_done"], rows_total);
    assert!(
        !dir.path()
            .join("imports")
            .join(format!("{id}.ndjson"))
            .exists(),
        "a finished job's file is removed"
    );
    assert_eq!(done["failed"], file.refused.len() as u64);
    // Rows that ran after the last checkpoint (how many depends on where the kill fell)
    // ran again, answered from their records; the export below shows none applied twice.
    eprintln!(
        "rows answered from their records after the restart: {}",
        done["replayed"]
    );
    let ran = done["applied"].as_u64().unwrap() + done["replayed"].as_u64().unwrap();
    assert_eq!(
        ran,
        file.valid_stock_rows + file.catalog_rows,
        "every valid row ran once to an answer: {done}"
    );

    // The refused rows, by row number, with the code the same call would get.
    let r = client
        .get(format!("{base}/v1/imports/{id}/errors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let errors: Vec<(u64, String)> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["row"].as_u64().unwrap(),
                v["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = file
        .refused
        .iter()
        .map(|(r, c)| (*r, (*c).to_string()))
        .collect();
    assert_eq!(errors, want);

    // Every key holds exactly what the file says, once the read models caught up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (rows, offsets) = loop {
        let (rows, offsets) = export(&client, &base, "").await;
        if on_hand(&rows) == file.expected {
            break (rows, offsets);
        }
        assert!(
            Instant::now() < deadline,
            "the export never matched the file"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), SKUS * LOCATIONS.len());
    assert!(offsets.starts_with("read-models@"), "{offsets}");
    let (south, _) = export(&client, &base, "?region=south").await;
    assert_eq!(south.len(), SKUS);
    assert!(south.keys().all(|(_, l)| l == "l5"));
    let csv = client
        .get(format!("{base}/v1/exports/stock?region=north&format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv");
    let csv = csv.text().await.unwrap();
    let mut csv_lines = csv.lines();
    assert!(
        csv_lines
            .next()
            .unwrap()
            .starts_with("sku,location,region,on_hand")
    );
    assert_eq!(csv_lines.count(), SKUS * 5);

    // The same file again, under another key: every stock row is answered from its
    // record, nothing changes.
    let r = upload(&client, &base, "load-2", file.text.clone()).await;
    assert_eq!(r.status(), 202);
    let second: Value = r.json().await.unwrap();
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, id);
    let done = wait_until(&client, &base, &second_id, |j| j["status"] == "done").await;
    assert_eq!(done["replayed"], file.valid_stock_rows, "{done}");
    assert_eq!(
        done["applied"], file.catalog_rows,
        "only the catalog upserts ran: {done}"
    );
    assert_eq!(done["failed"], file.refused.len() as u64);

    // One more change moves the offsets on; the export still equals the file plus it.
    let r = client
        .post(format!("{base}/v1/adjustments"))
        .header("idempotency-key", "after-import")
        .json(&json!({"sku": "SKU-0", "location": "l0", "delta": 1, "reason": "receipt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut expected = file.expected.clone();
    *expected.get_mut(&("SKU-0".into(), "l0".into())).unwrap() += 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, later) = export(&client, &base, "").await;
        if on_hand(&rows) == expected {
            assert!(
                offsets_total(&later) > offsets_total(&offsets),
                "{offsets} → {later}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the export never showed the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dev.stop();
}

/// Waits until the export's on-hand per key is `expected`.
async fn export_matches(
    client: &reqwest::Client,
    base: &str,
    expected: &BTreeMap<(String, String), i64>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, _) = export(client, base, "").await;
        if on_hand(&rows) == *expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the export never matched the file"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_backed_up_while_it_runs_finishes_once_on_the_restored_platform() {
    let dir = tempfile::tempdir().unwrap();
    let (data, backup, restored) = (
        dir.path().join("data"),
        dir.path().join("backup"),
        dir.path().join("restored"),
    );
    let addr = free_addr();
    let rate = ["--import-rows-per-second", "2000"];
    let dev = DevProcess::start_with(&data, addr, &rate).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let file = import_file();
    let rows_total = file.text.lines().count() as u64;
    let r = upload(&client, &base, "nightly", file.text.clone()).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mid = wait_until(&client, &base, &id, |j| {
        j["rows_done"].as_u64().unwrap() >= 3_000
    })
    .await;
    assert_ne!(mid["status"], "done", "the import ran too fast: {mid}");
    let report = stockflow_output(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backup.to_str().unwrap(),
    ]);
    assert!(report.contains("1 unfinished imports"), "{report}");
    // Rows go on after the copy: the restored platform must run them itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    dev.kill_hard();

    stockflow_output(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    let dev = DevProcess::start_with(&restored, addr, &[]).await;
    let done = wait_until(&client, &base, &id, |j| j["status"] == "done").await;
    assert_eq!(done["rows_done"], rows_total);
    assert_eq!(done["failed"], file.refused.len() as u64, "{done}");
    // Rows the copied write side applied after the copied checkpoint (if any) are replayed
    // from their records; every valid row answers once either way.
    let ran = done["applied"].as_u64().unwrap() + done["replayed"].as_u64().unwrap();
    assert_eq!(ran, file.valid_stock_rows + file.catalog_rows, "{done}");
    // Deltas applied twice, or skipped, would show here.
    export_matches(&client, &base, &file.expected).await;
    dev.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_scylladb_an_import_whose_process_dies_is_finished_by_another_once() {
    let keyspace = TestKeyspace::migrated("imports");
    let mut args = keyspace.dev_args().to_vec();
    args.extend(["--import-rows-per-second", "2000"]);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = DevProcess::start_with(dir_a.path(), free_addr(), &args).await;
    let base_a = format!("http://{}", a.addr);
    let client = reqwest::Client::new();
    let file = import_file();
    let rows_total = file.text.lines().count() as u64;
    let r = upload(&client, &base_a, "erp-night", file.text.clone()).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mid = wait_until(&client, &base_a, &id, |j| {
        j["rows_done"].as_u64().unwrap() >= 3_000
    })
    .await;
    assert_ne!(mid["status"], "done", "the import ran too fast: {mid}");
    a.kill_hard();

    // Another process on the keyspace, which never saw the file: it takes the job once the
    // dead one's lease lapses, fetches the file from the keyspace and finishes it.
    let b = DevProcess::start_with(dir_b.path(), free_addr(), &args).await;
    let base_b = format!("http://{}", b.addr);
    let done = wait_until(&client, &base_b, &id, |j| j["status"] == "done").await;
    assert_eq!(done["rows_done"], rows_total);
    assert_eq!(done["failed"], file.refused.len() as u64, "{done}");
    let ran = done["applied"].as_u64().unwrap() + done["replayed"].as_u64().unwrap();
    assert_eq!(ran, file.valid_stock_rows + file.catalog_rows, "{done}");
    // Every key holds what the file says: nothing applied twice, nothing lost (read from
    // the write side: each process projects only its own embedded log).
    let backend = ScyllaBackend::open(&keyspace.config()).await.unwrap();
    let held: BTreeMap<(String, String), i64> = backend
        .write
        .all_stock_levels()
        .await
        .unwrap()
        .into_iter()
        .map(|l| ((l.sku.to_string(), l.location.to_string()), l.on_hand))
        .collect();
    assert_eq!(held, file.expected);
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_with_problems_and_jobs_are_their_uploaders() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let dev = DevProcess::start(dir.path(), addr).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    // Not NDJSON.
    let r = client
        .post(format!("{base}/v1/imports"))
        .header("idempotency-key", "k1")
        .json(&json!({"rows": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // No rows.
    let r = upload(&client, &base, "k2", String::new()).await;
    assert_eq!(r.status(), 422);
    // No key.
    let r = client
        .post(format!("{base}/v1/imports"))
        .header("content-type", "application/x-ndjson")
        .body("{}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An id nobody made.
    let r = client
        .get(format!("{base}/v1/imports/{}", "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .get(format!("{base}/v1/exports/stock?format=xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    dev.stop();
}
