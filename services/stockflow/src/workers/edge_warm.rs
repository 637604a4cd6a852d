//! Edge-cache warming: right after a purge, fetch the purged SKUs' canonical query URLs
//! through the cache, so the next shopper hits a fresh object instead of waiting on the
//! origin (and a burst of shoppers does not arrive at the origin together).
//!
//! - Which SKUs: those the purge found cached (the cache said it removed objects), the
//!   most cached first, at most `--edge-warm-max` per batch ([`super::edge_purge`]). An
//!   object in the cache is one somebody read since the SKU's last purge, which the edge
//!   knows and the origin does not (it sees only misses); a SKU nobody reads is not
//!   fetched again for nothing.
//! - Which URLs: `/v1/stock/{sku}`, `/v1/availability/{sku}` and `/v1/stock/{sku}/{location}`
//!   for each changed location (a few per SKU) — the pages a shopper's product view reads.
//!   Search pages are left to their short TTL.
//! - Each GET carries `x-stockflow-warm: 1`; the sample VCL then fetches from the origin
//!   even if it still holds an object (`hash_always_miss`), for callers in its purge ACL
//!   only. Best effort: a failed warm-up is counted and forgotten (the next read fetches).

use std::collections::BTreeSet;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The header that asks the cache for a fresh copy.
pub const WARM_HEADER: &str = "x-stockflow-warm";

/// Location URLs warmed per SKU at most.
const LOCATIONS_PER_SKU: usize = 4;
/// Warm-up requests in flight at once: enough to finish a batch in a few round trips,
/// few enough not to crowd shoppers out of the origin.
const CONCURRENCY: usize = 4;

/// SKUs to warm, most read first, each with the locations whose stock changed.
#[derive(Debug)]
pub struct WarmBatch {
    /// `(sku, changed locations)`.
    pub skus: Vec<(String, BTreeSet<String>)>,
}

impl WarmBatch {
    /// The paths to fetch again, in the batch's order.
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        for (sku, locations) in &self.skus {
            paths.push(format!("/v1/stock/{sku}"));
            paths.push(format!("/v1/availability/{sku}"));
            for location in locations.iter().take(LOCATIONS_PER_SKU) {
                paths.push(format!("/v1/stock/{sku}/{location}"));
            }
        }
        paths
    }
}

/// Warms what `batches` brings until the sender is dropped or `shutdown`.
pub(super) async fn run(
    client: reqwest::Client,
    base: String,
    mut batches: mpsc::Receiver<WarmBatch>,
    shutdown: CancellationToken,
) {
    let base = base.trim_end_matches('/').to_string();
    loop {
        let batch = tokio::select! {
            batch = batches.recv() => batch,
            _ = shutdown.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        let started = Instant::now();
        let client = &client;
        let base = &base;
        futures::stream::iter(batch.paths())
            .for_each_concurrent(CONCURRENCY, |path| async move {
                let url = format!("{base}{path}");
                let result = match client.get(&url).header(WARM_HEADER, "1").send().await {
                    // 404: a key the read model does not hold (yet); nothing to warm.
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 404 => "ok",
                    Ok(r) => {
                        tracing::debug!(%url, status = %r.status(), "edge warm-up refused");
                        "failed"
                    }
                    Err(e) => {
                        tracing::debug!(%url, error = %e, "edge warm-up failed");
                        "failed"
                    }
                };
                metrics::counter!("stockflow_edge_warms_total", "result" => result).increment(1);
            })
            .await;
        metrics::histogram!("stockflow_edge_warm_seconds").record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_warms_the_product_pages_of_each_sku_in_order() {
        let batch = WarmBatch {
            skus: vec![
                ("B".into(), ["s1".to_string()].into()),
                ("A".into(), (0..9).map(|i| format!("s{i}")).collect()),
            ],
        };
        let paths = batch.paths();
        assert_eq!(
            &paths[..3],
            ["/v1/stock/B", "/v1/availability/B", "/v1/stock/B/s1"]
        );
        assert_eq!(paths[3], "/v1/stock/A");
        assert_eq!(paths.len(), 3 + 2 + LOCATIONS_PER_SKU);
    }
}
