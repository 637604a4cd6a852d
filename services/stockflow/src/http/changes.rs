//! The change feed a store agent follows: `GET /v1/changes` (long poll, or Server-Sent
//! Events with `Accept: text/event-stream`) hands out the read-model rows of some
//! locations in the order they changed, with a cursor to resume from; a cursor the feed no
//! longer serves answers 410 naming the snapshot (`GET /v1/changes/snapshot`) to load and
//! follow on from, as ElectricSQL's "must refetch" does.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use stockflow_domain::LocationId;
use stockflow_storage::ports::{Changes, InventoryRow};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::QueryParams;
use super::model::rfc3339;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

/// Locations one request may follow.
const MAX_LOCATIONS: usize = 100;
/// The longest a long poll waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting request looks at the feed again.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Rows per page unless asked for fewer.
const DEFAULT_LIMIT: usize = 500;

/// Query of the change feed.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ChangesParams {
    /// Comma-separated locations (1-100): a store's token may name only its own.
    // Stated inline (see `MovementParams`); the document test checks both patterns.
    #[param(
        pattern = "^[A-Za-z0-9._:-]{1,64}(,[A-Za-z0-9._:-]{1,64}){0,99}$",
        min_length = 1,
        max_length = 6499,
        example = "store-1,store-2"
    )]
    pub locations: String,
    /// The cursor of the previous page (absent: from the oldest change held). A cursor of
    /// another backend's feed answers 410 `cursor_expired`.
    #[param(
        pattern = "^(e:[0-9]{1,18}|s@[0-9]{1,15}|s:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-1[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
        min_length = 1,
        max_length = 38
    )]
    pub after: Option<String>,
    /// At most this many rows (1-1000, default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Wait up to this many milliseconds for a change when there is none (0-30000).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// The header an event stream resumes from (documented here; read from the header map,
/// where an empty value means no cursor, as EventSource has it).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(
    dead_code,
    reason = "documents the header; the handler reads the header map"
)]
pub(crate) struct ResumeHeader {
    /// Resume an event stream (instead of `after`; empty: no cursor).
    #[param(
        rename = "Last-Event-ID",
        nullable = false,
        pattern = "^$|^(e:[0-9]{1,18}|s@[0-9]{1,15}|s:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-1[0-9a-fA-F]{3}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
        max_length = 38
    )]
    last_event_id: Option<String>,
}

/// Query of the snapshot.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SnapshotParams {
    /// Comma-separated locations (1-100): a store's token may name only its own.
    // Stated inline (see `MovementParams`); the document test checks both patterns.
    #[param(
        pattern = "^[A-Za-z0-9._:-]{1,64}(,[A-Za-z0-9._:-]{1,64}){0,99}$",
        min_length = 1,
        max_length = 6499,
        example = "store-1,store-2"
    )]
    pub locations: String,
}

/// One key as it is after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeBody {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Region of the location.
    pub region: String,
    /// On hand.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// Available.
    pub available: i64,
    /// The key's version.
    pub version: u64,
    /// When the change happened (RFC 3339).
    pub as_of: String,
    /// When the change happened, Unix milliseconds.
    pub as_of_ms: i64,
}

impl From<InventoryRow> for ChangeBody {
    fn from(r: InventoryRow) -> Self {
        Self {
            as_of: rfc3339(r.as_of_ms),
            sku: r.sku,
            location: r.location,
            region: r.region,
            on_hand: r.on_hand,
            reserved: r.reserved,
            available: r.available,
            version: r.version,
            as_of_ms: r.as_of_ms,
        }
    }
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangesResponse {
    /// The rows that changed, in the order they changed.
    pub changes: Vec<ChangeBody>,
    /// Where the next page starts (give it as `after`; also the SSE event id).
    pub cursor: String,
}

/// Every row of some locations, and where the feed goes on from.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SnapshotResponse {
    /// The rows.
    pub rows: Vec<ChangeBody>,
    /// Follow the feed from here (`after`).
    pub cursor: String,
}

/// The locations asked for, each one the caller may read.
fn locations(identity: &Identity, text: &str) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let location = LocationId::parse(name)?;
        if !identity.may_read_at(location.as_str()) {
            return Err(ApiError::LocationForbidden(location.to_string()));
        }
        if !out.contains(&location.to_string()) {
            out.push(location.to_string());
        }
    }
    if out.is_empty() || out.len() > MAX_LOCATIONS {
        return Err(stockflow_domain::ValidationError::new(
            "locations",
            format!("name 1-{MAX_LOCATIONS} locations, comma-separated"),
        )
        .into());
    }
    Ok(out)
}

/// The `Last-Event-ID` cursor, if one is sent: an empty one resets it (the EventSource
/// rule); anything else must be a cursor, even when `after` wins over it.
fn resume_cursor(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(value.as_bytes());
    if id.is_empty() {
        return Ok(None);
    }
    if stockflow_storage::ports::ChangeCursor::parse(&id).is_none() {
        return Err(ApiError::InvalidQuery(format!(
            "Last-Event-ID: {id:?} is not a cursor this feed gave out"
        )));
    }
    Ok(Some(id.into_owned()))
}

fn snapshot_link(locations: &[String]) -> String {
    format!("/v1/changes/snapshot?locations={}", locations.join(","))
}

/// One page: waits up to `wait` for a change when the first read finds none.
async fn next_page(
    state: &AppState,
    locations: &[String],
    after: Option<&str>,
    limit: usize,
    wait: Duration,
) -> ApiResult<ChangesResponse> {
    let deadline = Instant::now() + wait;
    loop {
        match state.read.changes(locations, after, limit).await? {
            Changes::Page { rows, cursor } => {
                if !rows.is_empty() || Instant::now() >= deadline {
                    return Ok(ChangesResponse {
                        changes: rows.into_iter().map(Into::into).collect(),
                        cursor,
                    });
                }
            }
            Changes::Expired => {
                return Err(ApiError::CursorExpired {
                    snapshot: snapshot_link(locations),
                });
            }
            Changes::BadCursor(c) => {
                return Err(ApiError::InvalidQuery(format!(
                    "after: {c:?} is not a cursor this feed gave out"
                )));
            }
        }
        tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

/// The changes of some locations after a cursor, oldest first: a long poll, or a stream of
/// Server-Sent Events (`event: changes`, the page as `data`, its cursor as `id`;
/// `Last-Event-ID` resumes) with `Accept: text/event-stream`.
#[utoipa::path(get, path = "/v1/changes", tag = "queries",
    params(ChangesParams, ResumeHeader),
    responses((status = 200, body = ChangesResponse, description = "A page (JSON), or an event stream"),
              (status = 410, body = Problem, description = "cursor_expired: load the snapshot the problem names and follow from its cursor")))]
pub(crate) async fn changes(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<ChangesParams>,
) -> ApiResult<Response> {
    let locations = locations(&identity, &p.locations)?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(
            stockflow_domain::ValidationError::new("limit", "must be between 1 and 1000").into(),
        );
    }
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0));
    if wait > MAX_WAIT {
        return Err(stockflow_domain::ValidationError::new(
            "wait_ms",
            format!("must be between 0 and {}", MAX_WAIT.as_millis()),
        )
        .into());
    }
    let resume = resume_cursor(&headers)?;
    let after = p.after.or(resume);
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        // Check the cursor before committing to a stream: an expired one is a 410.
        let first = next_page(&state, &locations, after.as_deref(), limit, Duration::ZERO).await?;
        return Ok(stream(state, locations, first, limit).into_response());
    }
    let page = next_page(&state, &locations, after.as_deref(), limit, wait).await?;
    let mut response = axum::Json(page).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn stream(
    state: AppState,
    locations: Vec<String>,
    first: ChangesResponse,
    limit: usize,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold(
        (state, locations, Some(first), None::<String>, false),
        move |(state, locations, pending, cursor, done)| async move {
            if done {
                return None;
            }
            let page = match pending {
                Some(page) => Ok(page),
                None => next_page(&state, &locations, cursor.as_deref(), limit, MAX_WAIT).await,
            };
            match page {
                Ok(page) => {
                    let cursor = page.cursor.clone();
                    let event = Event::default()
                        .event("changes")
                        .id(cursor.clone())
                        .json_data(&page)
                        .unwrap_or_else(|_| Event::default().comment("unencodable page"));
                    Some((Ok(event), (state, locations, None, Some(cursor), false)))
                }
                Err(ApiError::CursorExpired { snapshot }) => {
                    let event = Event::default().event("expired").data(snapshot);
                    Some((Ok(event), (state, locations, None, cursor, true)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the change feed's stream stopped");
                    let event = Event::default().event("error").data(e.to_string());
                    Some((Ok(event), (state, locations, None, cursor, true)))
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Every row of some locations and the cursor to follow the feed from: what a store agent
/// loads first, and again after a 410.
#[utoipa::path(get, path = "/v1/changes/snapshot", tag = "queries",
    params(SnapshotParams),
    responses((status = 200, body = SnapshotResponse)))]
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    QueryParams(p): QueryParams<SnapshotParams>,
) -> ApiResult<Response> {
    let locations = locations(&identity, &p.locations)?;
    let snapshot = state.read.change_snapshot(&locations).await?;
    let body = SnapshotResponse {
        rows: snapshot.rows.into_iter().map(Into::into).collect(),
        cursor: snapshot.cursor,
    };
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
