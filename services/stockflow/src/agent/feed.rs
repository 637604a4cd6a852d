//! Following the region's change feed for the store's locations: long polls from the
//! stored cursor, each page applied with its cursor in one transaction (a restart resumes
//! exactly after it), and a cursor the region no longer serves (410) answered by loading
//! the snapshot it names and following from there. Queued commands are never touched: the
//! local view is the region's state plus them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::region::Region;
use super::store::{AgentStore, ViewRow};
use super::{AgentError, now_ms};

/// How long one long poll waits at the region for a change.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// The wait after a failed poll (the region is down: the forwarder's breaker knows more).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// What the status page shows of the feed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedState {
    /// When a page of the feed was last applied, Unix ms.
    pub last_update_ms: Option<i64>,
    /// Changes applied since start.
    pub changes_applied: u64,
    /// Snapshots loaded since start (a cursor the region no longer served).
    pub resyncs: u64,
    /// The last failure, if the last poll failed.
    pub last_error: Option<String>,
}

/// One change as the region's feed gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// The key's version after the change.
    pub version: u64,
    /// When the change happened, Unix ms.
    pub as_of_ms: i64,
}

impl From<Change> for ViewRow {
    fn from(c: Change) -> Self {
        ViewRow {
            sku: c.sku,
            location: c.location,
            on_hand: c.on_hand,
            reserved: c.reserved,
            version: c.version,
            as_of_ms: c.as_of_ms,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    changes: Vec<Change>,
    cursor: String,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    rows: Vec<Change>,
    cursor: String,
}

/// Follows the feed until `stop`.
pub async fn run(
    store: AgentStore,
    region: Arc<Region>,
    locations: Vec<String>,
    state: Arc<Mutex<FeedState>>,
    stop: CancellationToken,
) {
    let locations = locations.join(",");
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = poll(&store, &region, &locations) => result,
        };
        let failed = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(Polled::Applied(n)) => {
                    s.last_error = None;
                    s.changes_applied += n as u64;
                    s.last_update_ms = Some(now_ms());
                    false
                }
                Ok(Polled::Resynced(n)) => {
                    s.last_error = None;
                    s.changes_applied += n as u64;
                    s.resyncs += 1;
                    s.last_update_ms = Some(now_ms());
                    false
                }
                Err(e) => {
                    s.last_error = Some(e.to_string());
                    true
                }
            }
        };
        if failed {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
            }
        }
    }
}

enum Polled {
    Applied(usize),
    Resynced(usize),
}

async fn poll(store: &AgentStore, region: &Region, locations: &str) -> Result<Polled, AgentError> {
    let Some(cursor) = store.cursor()? else {
        return resync(store, region, locations).await;
    };
    let wait_ms = POLL_WAIT.as_millis().to_string();
    let response = region
        .request(reqwest::Method::GET, "/v1/changes")?
        .query(&[
            ("locations", locations),
            ("after", cursor.as_str()),
            ("wait_ms", wait_ms.as_str()),
        ])
        .timeout(POLL_WAIT + Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| AgentError::Region(format!("change feed: {e}")))?;
    match response.status() {
        reqwest::StatusCode::GONE => {
            tracing::warn!(
                "the region no longer serves the feed from our cursor; loading its snapshot"
            );
            resync(store, region, locations).await
        }
        s if s.is_success() => {
            let page: Page = response
                .json()
                .await
                .map_err(|e| AgentError::Region(format!("change feed page: {e}")))?;
            let n = page.changes.len();
            let rows: Vec<ViewRow> = page.changes.into_iter().map(Into::into).collect();
            store.apply_changes(&rows, &page.cursor)?;
            Ok(Polled::Applied(n))
        }
        s => Err(AgentError::Region(format!(
            "change feed answered {s}: {}",
            response.text().await.unwrap_or_default()
        ))),
    }
}

/// Loads the region's snapshot of the store's locations and the cursor to follow from.
async fn resync(
    store: &AgentStore,
    region: &Region,
    locations: &str,
) -> Result<Polled, AgentError> {
    let response = region
        .request(reqwest::Method::GET, "/v1/changes/snapshot")?
        .query(&[("locations", locations)])
        .send()
        .await
        .map_err(|e| AgentError::Region(format!("snapshot: {e}")))?;
    if !response.status().is_success() {
        return Err(AgentError::Region(format!(
            "snapshot answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        )));
    }
    let snapshot: Snapshot = response
        .json()
        .await
        .map_err(|e| AgentError::Region(format!("snapshot: {e}")))?;
    let n = snapshot.rows.len();
    let rows: Vec<ViewRow> = snapshot.rows.into_iter().map(Into::into).collect();
    store.reset_view(&rows, &snapshot.cursor)?;
    Ok(Polled::Resynced(n))
}
