//! The checkout loop the `reserve` and `import` workloads drive: reserve one unit, then
//! confirm it, on one keep-alive connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::conn::{Conn, LOCATION, histogram, sku};

/// What one checkout connection did: reserve and confirm latencies, reserves acknowledged,
/// refused, and errors.
pub(crate) type CheckoutTally = (Histogram<u64>, Histogram<u64>, u64, u64, u64);

/// One connection looping checkouts (reserve qty 1, then confirm) until `deadline`;
/// `worker` names it in its Idempotency-Keys (unique per loop of a run).
pub(crate) async fn checkout_loop(
    mut conn: Conn,
    counter: Arc<AtomicU64>,
    run_id: String,
    worker: String,
    skus: usize,
    deadline: Instant,
) -> CheckoutTally {
    let (mut reserve_h, mut confirm_h) = (histogram(), histogram());
    let (mut ok, mut refused, mut errors) = (0u64, 0u64, 0u64);
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
            errors += 1;
            continue;
        };
        let _ = reserve_h.record(started.elapsed().as_micros() as u64);
        if status != StatusCode::CREATED {
            refused += 1;
            continue;
        }
        ok += 1;
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reservation_id"].as_str().map(str::to_string));
        let Some(id) = id else {
            errors += 1;
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
                let _ = confirm_h.record(started.elapsed().as_micros() as u64);
            }
            _ => errors += 1,
        }
    }
    (reserve_h, confirm_h, ok, refused, errors)
}
