//! `stockflow-bench pg`: the baseline the embedded platform is compared with: the same
//! checkout (reserve one unit, then confirm it) as transactions on PostgreSQL, one
//! connection per loop, synchronous commit. Each command is one transaction writing what a
//! stockflow command writes: the conditional stock update, the reservation, an outbox row
//! with the event, and the idempotency row with the answer (inserted last, so a retry that
//! raced it rolls back). `scripts/bench-pg.sh` starts a throwaway, durable server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use crate::BenchError;
use crate::args::Load;
use crate::checkout::Tally;
use crate::cpu::CpuSample;

/// Arguments of `stockflow-bench pg`.
#[derive(Debug, Args)]
pub struct PgArgs {
    /// The server, `postgresql://user@host:port/db` (the bench's tables are dropped and
    /// created there).
    #[arg(
        long,
        default_value = "postgresql://stockflow@127.0.0.1:15532/postgres"
    )]
    pub url: String,
    /// Connections (each looping checkouts), duration, SKUs and the processes to measure
    /// (the postmaster: its backends count with it).
    #[command(flatten)]
    pub load: Load,
}

const SCHEMA: &str = "
DROP TABLE IF EXISTS bench_stock, bench_reservations, bench_outbox, bench_idempotency;
CREATE TABLE bench_stock (
    sku text NOT NULL, location text NOT NULL,
    on_hand bigint NOT NULL, reserved bigint NOT NULL, version bigint NOT NULL,
    PRIMARY KEY (sku, location));
CREATE TABLE bench_reservations (
    id text PRIMARY KEY, sku text NOT NULL, location text NOT NULL,
    qty bigint NOT NULL, state text NOT NULL, expires_at_ms bigint NOT NULL);
CREATE TABLE bench_outbox (id bigserial PRIMARY KEY, sku text NOT NULL, payload jsonb NOT NULL);
CREATE TABLE bench_idempotency (key text PRIMARY KEY, status int NOT NULL, body jsonb NOT NULL);
";

const LOCATION: &str = "bench-dc";

fn setup_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

async fn connect(url: &str) -> Result<Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(setup_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("stockflow-bench pg: connection ended: {e}");
        }
    });
    // The platform acknowledges a command only once it is on disk: so does the baseline.
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(setup_error)?;
    Ok(client)
}

/// Runs the baseline and prints its report.
pub async fn run_pg(args: PgArgs) -> Result<(), BenchError> {
    let admin = connect(&args.url).await?;
    admin.batch_execute(SCHEMA).await.map_err(setup_error)?;
    let stock = admin
        .prepare("INSERT INTO bench_stock VALUES ($1, $2, 1000000000, 0, 1)")
        .await
        .map_err(setup_error)?;
    for s in 0..args.load.skus {
        admin
            .execute(&stock, &[&format!("PG-{s}"), &LOCATION])
            .await
            .map_err(setup_error)?;
    }
    println!(
        "PostgreSQL baseline: {} · {} connections · {} s · {} SKU(s)",
        args.url, args.load.connections, args.load.duration, args.load.skus
    );
    let deadline = Instant::now() + Duration::from_secs(args.load.duration);
    let counter = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for w in 0..args.load.connections {
        let client = connect(&args.url).await?;
        loops.push(tokio::spawn(checkout_loop(
            client,
            w,
            args.load.skus,
            counter.clone(),
            deadline,
        )));
    }
    let started = Instant::now();
    let cpu_start = CpuSample::take(&args.load.cpu);
    let mut tally = Tally::new();
    for l in loops {
        tally
            .add(l.await.map_err(setup_error)??)
            .map_err(BenchError::Setup)?;
    }
    let cpu_end = CpuSample::take(&args.load.cpu);
    let window = started.elapsed();
    tally.print("committed", window.as_secs_f64().max(f64::EPSILON));
    cpu_start.print(
        &cpu_end,
        &args.load.cpu,
        (tally.commands(), "command"),
        window,
    );
    Ok(())
}

/// The statements of one checkout, prepared once per connection.
struct Statements {
    take: tokio_postgres::Statement,
    hold: tokio_postgres::Statement,
    end: tokio_postgres::Statement,
    settle: tokio_postgres::Statement,
    publish: tokio_postgres::Statement,
    answer: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            take: client
                .prepare(
                    "UPDATE bench_stock SET reserved = reserved + 1, version = version + 1
                     WHERE sku = $1 AND location = $2 AND on_hand - reserved >= 1
                     RETURNING version",
                )
                .await?,
            hold: client
                .prepare("INSERT INTO bench_reservations VALUES ($1, $2, $3, 1, 'held', $4)")
                .await?,
            end: client
                .prepare(
                    "UPDATE bench_reservations SET state = 'confirmed'
                     WHERE id = $1 AND state = 'held' RETURNING sku, location, qty",
                )
                .await?,
            settle: client
                .prepare(
                    "UPDATE bench_stock SET on_hand = on_hand - $3, reserved = reserved - $3,
                     version = version + 1 WHERE sku = $1 AND location = $2 RETURNING version",
                )
                .await?,
            publish: client
                .prepare("INSERT INTO bench_outbox (sku, payload) VALUES ($1, $2)")
                .await?,
            answer: client
                .prepare("INSERT INTO bench_idempotency VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .await?,
        })
    }
}

async fn checkout_loop(
    mut client: Client,
    worker: usize,
    skus: usize,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<Tally, BenchError> {
    let st = Statements::prepare(&client).await.map_err(setup_error)?;
    let mut t = Tally::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let sku = format!("PG-{}", (n as usize).wrapping_mul(7919) % skus);
        let id = format!("r-{worker}-{i}");
        i += 1;
        let started = Instant::now();
        // Latency counts refusals too, as the HTTP loop's does.
        match reserve(&mut client, &st, &sku, &id).await {
            Ok(made) => {
                let _ = t.reserve.record(started.elapsed().as_micros() as u64);
                if !made {
                    t.refused += 1;
                    continue;
                }
                t.ok += 1;
            }
            Err(_) => {
                t.errors += 1;
                continue;
            }
        }
        let started = Instant::now();
        match confirm(&mut client, &st, &id).await {
            Ok(()) => {
                let _ = t.confirm.record(started.elapsed().as_micros() as u64);
            }
            Err(_) => t.errors += 1,
        }
    }
    Ok(t)
}

/// One reserve transaction; `false` when the stock was short (the refusal is recorded as
/// the answer, as the platform records refusals).
async fn reserve(
    client: &mut Client,
    st: &Statements,
    sku: &str,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let taken = tx.query_opt(&st.take, &[&sku, &LOCATION]).await?;
    let Some(row) = taken else {
        let body = json!({"code": "insufficient_stock"});
        tx.execute(&st.answer, &[&format!("{id}-r"), &409i32, &body])
            .await?;
        tx.commit().await?;
        return Ok(false);
    };
    let version: i64 = row.get(0);
    let expires = stockflow_storage::now_ms() + 900_000;
    tx.execute(&st.hold, &[&id, &sku, &LOCATION, &expires])
        .await?;
    let event = json!({"stream": "stock", "type": "reserved", "sku": sku, "location": LOCATION,
                       "version": version, "reservation_id": id, "qty": 1});
    tx.execute(&st.publish, &[&sku, &event]).await?;
    let body = json!({"reservation_id": id, "status": "held", "expires_at_ms": expires});
    tx.execute(&st.answer, &[&format!("{id}-r"), &201i32, &body])
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// One confirm transaction.
async fn confirm(
    client: &mut Client,
    st: &Statements,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if let Some(row) = tx.query_opt(&st.end, &[&id]).await? {
        let (sku, location, qty): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let settled = tx.query_one(&st.settle, &[&sku, &location, &qty]).await?;
        let version: i64 = settled.get(0);
        let event = json!({"stream": "stock", "type": "confirmed", "sku": sku,
                           "location": location, "version": version, "reservation_id": id});
        tx.execute(&st.publish, &[&sku, &event]).await?;
    }
    let body = json!({"reservation_id": id, "status": "confirmed"});
    tx.execute(&st.answer, &[&format!("{id}-c"), &200i32, &body])
        .await?;
    tx.commit().await
}
