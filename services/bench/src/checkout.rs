//! The checkout loop the `reserve` and `import` workloads drive: reserve one unit, then
//! confirm it, on one keep-alive connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::conn::{Conn, LOCATION, histogram, sku, spread};

/// What checkout loops did: reserve and confirm latencies, reserves made, refused, and
/// errors. The HTTP loop below and the PostgreSQL baseline's both report one.
pub(crate) struct Tally {
    pub reserve: Histogram<u64>,
    pub confirm: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            reserve: histogram(),
            confirm: histogram(),
            ok: 0,
            refused: 0,
            errors: 0,
        }
    }

    /// Adds another loop's tally to this one.
    pub(crate) fn add(&mut self, other: Tally) -> Result<(), String> {
        self.reserve.add(other.reserve).map_err(|e| e.to_string())?;
        self.confirm.add(other.confirm).map_err(|e| e.to_string())?;
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors += other.errors;
        Ok(())
    }

    /// Reserves and confirms done: the commands the run's CPU is divided by.
    pub(crate) fn commands(&self) -> u64 {
        self.ok + self.confirm.len()
    }

    /// Prints reserves (`made`: acknowledged, committed) and commands per second and both
    /// latencies over `elapsed` seconds.
    pub(crate) fn print(&self, made: &str, elapsed: f64) {
        println!(
            "  reserves {made}  {} ({:.0}/s), refused {}, errors {}",
            self.ok,
            self.ok as f64 / elapsed,
            self.refused,
            self.errors
        );
        println!(
            "  commands/s (reserve+confirm) {:.0}",
            self.commands() as f64 / elapsed
        );
        for (name, h) in [("reserve", &self.reserve), ("confirm", &self.confirm)] {
            println!("  {name} latency  {}", spread(h));
        }
    }
}

/// One connection looping checkouts (reserve qty 1, then confirm) until `deadline`;
/// `worker` names it in its Idempotency-Keys (unique per loop of a run).
pub(crate) async fn checkout_loop(
    mut conn: Conn,
    counter: Arc<AtomicU64>,
    run_id: String,
    worker: String,
    skus: usize,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let s = (n as usize).wrapping_mul(7919) % skus;
        let key = format!("b-{run_id}-{worker}-{i}");
        i += 1;
        let started = Instant::now();
        let reply = conn
            .send(
                Method::POST,
                "/v1/reservations",
                Some(&key),
                Some(
                    json!({"lines": [{"sku": sku(&run_id, s), "location": LOCATION, "qty": 1}],
                            "ttl_seconds": 900}),
                ),
            )
            .await;
        let Ok((status, body)) = reply else {
            t.errors += 1;
            continue;
        };
        let _ = t.reserve.record(started.elapsed().as_micros() as u64);
        if status != StatusCode::CREATED {
            t.refused += 1;
            continue;
        }
        t.ok += 1;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reservation_id"].as_str().map(str::to_string));
        let Some(id) = id else {
            t.errors += 1;
            continue;
        };
        let started = Instant::now();
        match conn
            .send(
                Method::POST,
                &format!("/v1/reservations/{id}/confirm"),
                Some(&format!("{key}-c")),
                None,
            )
            .await
        {
            Ok((StatusCode::OK, _)) => {
                let _ = t.confirm.record(started.elapsed().as_micros() as u64);
            }
            _ => t.errors += 1,
        }
    }
    t
}
