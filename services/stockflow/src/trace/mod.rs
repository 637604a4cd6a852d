//! `stockflow trace`: the path of one command through a region, read from its APIs.
//!
//! The write side answers where a reservation stands (`GET /v1/reservations/{id}` on the
//! command API); the read models answer, per movement, when it was committed, which bus
//! partition and offset it was projected from and which projector replica applied it, when
//! (`GET /v1/movements` on the query API, filtered by reservation or Idempotency-Key). A
//! change the write side has but the read models lack is named as such: that is the
//! "why is SKU X wrong in the store app?" an operator is asking.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Neither a reservation nor an Idempotency-Key with its key was named.
    #[error("{0}")]
    Usage(&'static str),
    /// An API could not be reached or did not answer in time.
    #[error("{url}: {}", causes(.source))]
    Unreachable {
        /// The request.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// An API answered with an error (its problem document, when it sent one).
    #[error("{url} answered {status}: {detail}")]
    Refused {
        /// The request.
        url: String,
        /// HTTP status.
        status: u16,
        /// The problem's `detail` or `title`, or the body.
        detail: String,
    },
    /// The reservation does not exist (or no longer: final reservations are removed after
    /// their retention).
    #[error("reservation {0} not found on the command API")]
    NotFound(String),
}

/// An error and its causes, as one line: reqwest's own message alone ("error sending
/// request") hides the "connection refused" an operator needs.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Settings of `stockflow trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The reservation to follow.
    #[arg(required_unless_present = "idempotency_key")]
    pub reservation_id: Option<String>,
    /// Follow the commands sent with this Idempotency-Key at `--sku` and `--location`
    /// instead (adjustments, or a reservation whose id is not at hand).
    #[arg(long, requires_all = ["sku", "location"], conflicts_with = "reservation_id")]
    pub idempotency_key: Option<String>,
    /// SKU of the key followed by `--idempotency-key`.
    #[arg(long)]
    pub sku: Option<String>,
    /// Location of the key followed by `--idempotency-key`.
    #[arg(long)]
    pub location: Option<String>,
    /// Base URL of the command API.
    #[arg(
        long,
        env = "STOCKFLOW_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api: String,
    /// Base URL of the query API (default: the command API's, as in `stockflow dev`).
    #[arg(long, env = "STOCKFLOW_QUERY_API_URL")]
    pub query_api: Option<String>,
    /// Bearer token (scope `stock:read`).
    #[arg(long, env = "STOCKFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the joined documents as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One `(sku, location)` of the trace and its movements, oldest first.
#[derive(Debug)]
struct KeyTrace {
    sku: String,
    location: String,
    qty: Option<u64>,
    movements: Vec<Value>,
}

/// A movement as `GET /v1/movements` shows it (the fields the printout uses).
#[derive(Debug, Deserialize)]
struct MovementView {
    version: u64,
    kind: String,
    on_hand: i64,
    reserved: i64,
    idempotency_key: Option<String>,
    actor: Option<ActorView>,
    occurred_at: String,
    projection: Option<ProjectionView>,
}

#[derive(Debug, Deserialize)]
struct ActorView {
    subject: String,
}

#[derive(Debug, Deserialize)]
struct ProjectionView {
    partition: u32,
    offset: u64,
    projected_at: String,
    projected_by: String,
}

struct Apis {
    http: reqwest::Client,
    command: String,
    query: String,
    token: Option<String>,
}

impl Apis {
    /// GETs `path` of `base`; `None` when it answers 404 and `absent_ok`.
    async fn get(
        &self,
        base: &str,
        path: &str,
        query: &[(&str, String)],
        absent_ok: bool,
    ) -> Result<Option<Value>, TraceError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let mut request = self.http.get(&url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|source| TraceError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        if status == 404 && absent_ok {
            return Ok(None);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let detail = ["detail", "title"]
                .iter()
                .find_map(|f| body.get(f).and_then(Value::as_str))
                .map_or_else(|| body.to_string(), str::to_string);
            return Err(TraceError::Refused {
                url,
                status,
                detail,
            });
        }
        Ok(Some(body))
    }

    /// Every movement of `(sku, location)` the filter keeps, following `next_after`.
    async fn movements(
        &self,
        sku: &str,
        location: &str,
        filter: (&str, &str),
    ) -> Result<Vec<Value>, TraceError> {
        let (mut found, mut after) = (Vec::new(), 0_u64);
        loop {
            let query = [
                ("sku", sku.to_string()),
                ("location", location.to_string()),
                (filter.0, filter.1.to_string()),
                ("after", after.to_string()),
                ("limit", "500".to_string()),
            ];
            let page = self
                .get(&self.query, "/v1/movements", &query, false)
                .await?
                .unwrap_or(Value::Null);
            if let Some(rows) = page.get("movements").and_then(Value::as_array) {
                found.extend(rows.iter().cloned());
            }
            match page.get("next_after").and_then(Value::as_u64) {
                Some(next) if next > after => after = next,
                _ => return Ok(found),
            }
        }
    }
}

/// Runs `stockflow trace`: prints the path of one reservation, or of the commands sent
/// with one Idempotency-Key at one key.
pub async fn run(args: TraceArgs) -> Result<(), TraceError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|source| TraceError::Unreachable {
            url: args.api.clone(),
            source,
        })?;
    let apis = Apis {
        http,
        query: args.query_api.clone().unwrap_or_else(|| args.api.clone()),
        command: args.api,
        token: args.token,
    };
    let (reservation, keys) = match (args.reservation_id, args.idempotency_key) {
        (Some(id), _) => {
            let path = format!("/v1/reservations/{id}");
            let reservation = apis
                .get(&apis.command, &path, &[], true)
                .await?
                .ok_or_else(|| TraceError::NotFound(id.clone()))?;
            let mut keys = Vec::new();
            for (sku, location, qty) in lines(&reservation) {
                let movements = apis
                    .movements(&sku, &location, ("reservation_id", &id))
                    .await?;
                keys.push(KeyTrace {
                    sku,
                    location,
                    qty: Some(qty),
                    movements,
                });
            }
            (Some(reservation), keys)
        }
        (None, Some(key)) => {
            let (Some(sku), Some(location)) = (args.sku, args.location) else {
                return Err(TraceError::Usage(
                    "--idempotency-key needs --sku and --location",
                ));
            };
            let movements = apis
                .movements(&sku, &location, ("idempotency_key", &key))
                .await?;
            let key = KeyTrace {
                sku,
                location,
                qty: None,
                movements,
            };
            (None, vec![key])
        }
        (None, None) => {
            return Err(TraceError::Usage(
                "name a reservation id, or --idempotency-key with --sku and --location",
            ));
        }
    };
    if args.json {
        println!("{}", to_json(reservation.as_ref(), &keys));
    } else {
        print!("{}", render(reservation.as_ref(), &keys));
    }
    Ok(())
}

/// The `(sku, location, qty)` lines of a reservation document, one per key.
fn lines(reservation: &Value) -> Vec<(String, String, u64)> {
    let mut keys: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in reservation
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(sku), Some(location)) = (
            line.get("sku").and_then(Value::as_str),
            line.get("location").and_then(Value::as_str),
        ) else {
            continue;
        };
        let qty = line.get("qty").and_then(Value::as_u64).unwrap_or(0);
        *keys
            .entry((sku.to_string(), location.to_string()))
            .or_default() += qty;
    }
    keys.into_iter()
        .map(|((sku, location), qty)| (sku, location, qty))
        .collect()
}

fn to_json(reservation: Option<&Value>, keys: &[KeyTrace]) -> Value {
    json!({
        "reservation": reservation,
        "keys": keys.iter().map(|k| json!({
            "sku": k.sku,
            "location": k.location,
            "qty": k.qty,
            "movements": k.movements,
        })).collect::<Vec<_>>(),
    })
}

/// The event each state of a reservation leaves on every line, after `stock_reserved`.
fn settling_event(status: &str) -> Option<&'static str> {
    match status {
        "confirmed" => Some("reservation_confirmed"),
        "released" => Some("reservation_released"),
        "expired" => Some("reservation_expired"),
        _ => None,
    }
}

fn millis(rfc3339: &str) -> Option<i128> {
    let at = humantime::parse_rfc3339(rfc3339).ok()?;
    let since = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i128::try_from(since.as_millis()).ok()
}

/// The printout: the reservation's write-side state, then per key each movement's
/// commit, bus record and projection, and what the read models still lack.
fn render(reservation: Option<&Value>, keys: &[KeyTrace]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("-").to_string();
    let status = reservation.map(|r| text(r, "status"));
    if let Some(r) = reservation {
        let _ = writeln!(
            out,
            "reservation {}: {} (reference {})",
            text(r, "reservation_id"),
            text(r, "status"),
            text(r, "reference")
        );
        let _ = writeln!(
            out,
            "  write side  created {}, updated {}, expires {}",
            text(r, "created_at"),
            text(r, "updated_at"),
            text(r, "expires_at")
        );
    }
    for key in keys {
        let qty = key.qty.map(|q| format!(", qty {q}")).unwrap_or_default();
        let _ = writeln!(out, "{} @ {}{qty}", key.sku, key.location);
        let mut kinds = BTreeSet::new();
        for raw in &key.movements {
            let Ok(m) = serde_json::from_value::<MovementView>(raw.clone()) else {
                let _ = writeln!(out, "  (a movement this version cannot read: {raw})");
                continue;
            };
            kinds.insert(m.kind.clone());
            let who = m.actor.map_or_else(|| "expiry".to_string(), |a| a.subject);
            let key = m.idempotency_key.unwrap_or_else(|| "-".to_string());
            let _ = writeln!(
                out,
                "  v{} {}  on hand {}, reserved {}",
                m.version, m.kind, m.on_hand, m.reserved
            );
            let _ = writeln!(
                out,
                "    committed  {}  by {who}, Idempotency-Key {key}",
                m.occurred_at
            );
            match m.projection {
                Some(p) => {
                    let lag = millis(&p.projected_at)
                        .zip(millis(&m.occurred_at))
                        .map(|(p, c)| format!(" (+{} ms)", p - c))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "    published  partition {}, offset {}",
                        p.partition, p.offset
                    );
                    let _ = writeln!(
                        out,
                        "    projected  {}{lag}  by {}",
                        p.projected_at, p.projected_by
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    projected  (no record of where from: a replayed dead letter, or projected before schema v7 recorded it)"
                    );
                }
            }
        }
        let Some(status) = status.as_deref() else {
            if key.movements.is_empty() {
                let _ = writeln!(
                    out,
                    "  no movement with this Idempotency-Key in the read models"
                );
            }
            continue;
        };
        let expected = std::iter::once("stock_reserved").chain(settling_event(status));
        for missing in expected.filter(|k| !kinds.contains(*k)) {
            let _ = writeln!(
                out,
                "  {missing}: committed on the write side, not in the read models yet \
                 (outbox backlog or consumer lag: see stockflow_outbox_oldest_age_seconds \
                 and stockflow_consumer_lag_records)"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
