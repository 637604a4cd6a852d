//! The purge worker against a stand-in cache (a local HTTP server speaking the sample
//! VCL's contract): coalescing, retries after failures, overflow, warming.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use stockflow_domain::{
    AdjustReason, Detail, EventKind, EventMeta, LocationId, Region, Sku, StockEvent, StockLevel,
};

use super::*;

fn stock_event(sku: &str, location: &str) -> BusEvent {
    let level = StockLevel {
        on_hand: 1,
        version: 1,
        ..StockLevel::empty(
            Sku::parse(sku).expect("sku"),
            LocationId::parse(location).expect("location"),
            Region::parse("north").expect("region"),
        )
    };
    let detail = Detail {
        reason: Some(AdjustReason::Receipt),
        ..Detail::default()
    };
    BusEvent::Stock(StockEvent::for_level(
        EventKind::StockAdjusted,
        &level,
        detail,
        &EventMeta::default(),
    ))
}

/// What the stand-in cache saw, and how many requests it refuses first.
#[derive(Default)]
struct Cache {
    seen: Mutex<Vec<(String, String)>>,
    refuse_first: AtomicUsize,
}

async fn answer(State(cache): State<Arc<Cache>>, request: Request) -> axum::response::Response {
    let method = request.method().to_string();
    let detail = match method.as_str() {
        "PURGE" => request
            .headers()
            .get(PURGE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        _ => format!(
            "{} warm={}",
            request.uri().path(),
            request.headers().contains_key(edge_warm::WARM_HEADER)
        ),
    };
    let refused = cache
        .refuse_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    cache
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((method, detail));
    if refused {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ([(PURGED_HEADER, "2")], "ok").into_response()
}

async fn cache(refuse_first: usize) -> (Arc<Cache>, String) {
    let cache = Arc::new(Cache {
        refuse_first: AtomicUsize::new(refuse_first),
        ..Cache::default()
    });
    let app = Router::new().fallback(answer).with_state(cache.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (cache, format!("http://{addr}/"))
}

fn seen(cache: &Cache) -> Vec<(String, String)> {
    cache
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Waits until `cache` has seen what `done` looks for.
async fn until(cache: &Cache, done: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = seen(cache);
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "the cache saw only {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn purges(seen: &[(String, String)]) -> Vec<String> {
    seen.iter()
        .filter(|(m, _)| m == "PURGE")
        .map(|(_, tag)| tag.clone())
        .collect()
}

#[test]
fn the_queue_coalesces_and_overflows_into_a_purge_of_everything() {
    let queue = PurgeQueue::new(2);
    queue.applied(&[
        stock_event("A", "s1"),
        stock_event("A", "s2"),
        stock_event("B", "s1"),
    ]);
    let pending = queue.take();
    assert_eq!(pending.skus.len(), 2);
    assert_eq!(pending.skus["A"].len(), 2);
    assert!(!pending.overflowed);
    queue.applied(&[
        stock_event("A", "s1"),
        stock_event("B", "s1"),
        stock_event("C", "s1"),
    ]);
    let pending = queue.take();
    assert!(pending.overflowed && pending.skus.is_empty());
    assert!(queue.is_empty());
}

#[tokio::test]
async fn each_changed_sku_is_purged_once_then_warmed() {
    let (cache, url) = cache(0).await;
    let queue = PurgeQueue::new(100);
    let stop = CancellationToken::new();
    let job = tokio::spawn(run(queue.clone(), PurgeConfig::new(url), stop.clone()));
    queue.applied(&[
        stock_event("A", "s1"),
        stock_event("A", "s1"),
        stock_event("B", "s2"),
    ]);
    let seen = until(&cache, |s| {
        s.iter().filter(|(m, _)| m == "GET").count() == 6
    })
    .await;
    let mut purged = purges(&seen);
    purged.sort();
    assert_eq!(purged, ["sku:A", "sku:B"]);
    assert!(
        seen.contains(&("GET".into(), "/v1/stock/A/s1 warm=true".into())),
        "{seen:?}"
    );
    stop.cancel();
    job.await.expect("stops");
}

#[tokio::test]
async fn a_failing_cache_is_retried_until_the_purge_lands() {
    // Three attempts per round: the first round fails, the second lands.
    let (cache, url) = cache(4).await;
    let queue = PurgeQueue::new(100);
    let stop = CancellationToken::new();
    let mut config = PurgeConfig::new(url);
    config.warm_url = None;
    let job = tokio::spawn(run(queue.clone(), config, stop.clone()));
    queue.applied(&[stock_event("A", "s1")]);
    let first = until(&cache, |s| purges(s).len() == 5).await;
    assert!(purges(&first).iter().all(|tag| tag == "sku:A"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        purges(&seen(&cache)).len(),
        5,
        "nothing more once it landed"
    );
    stop.cancel();
    job.await.expect("stops");
}

#[tokio::test]
async fn an_overflowing_queue_purges_everything_and_warms_nothing() {
    let (cache, url) = cache(0).await;
    let mut config = PurgeConfig::new(url);
    config.capacity = 1;
    let queue = PurgeQueue::new(config.capacity);
    // Filled before the worker runs, so both SKUs land in one batch.
    queue.applied(&[stock_event("A", "s1"), stock_event("B", "s1")]);
    let stop = CancellationToken::new();
    let job = tokio::spawn(run(queue.clone(), config, stop.clone()));
    let first = until(&cache, |s| !purges(s).is_empty()).await;
    assert_eq!(purges(&first), [ALL_TAG]);
    stop.cancel();
    job.await.expect("stops");
    assert!(seen(&cache).iter().all(|(m, _)| m == "PURGE"));
}
