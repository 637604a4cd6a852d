//! What staff see: online or offline, the queue and its oldest command's age, the
//! quarantine, the feed's freshness, the clock against the region's, the disk; as JSON
//! (`/agent/status`), as Prometheus metrics (`/metrics`), and as one self-contained HTML
//! page (`/agent`) a POS can embed: no script, no outside asset, refreshed by the browser
//! every few seconds.

use serde::Serialize;

use super::feed::FeedState;
use super::forward::LinkState;
use super::state::AgentState;
use super::store::QueueCounts;
use super::{AgentError, now_ms};

/// A clock further off the region's than this is flagged: nothing is ordered by clocks
/// (the queue is ordered by `seq`), but receipts and reports read them.
pub const CLOCK_SKEW_WARNING_MS: i64 = 5 * 60 * 1000;
/// Share of the disk cap past which the status warns.
const DISK_WARNING_PERCENT: u64 = 80;

/// Everything the status shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The store.
    pub store_id: String,
    /// Its locations.
    pub locations: Vec<String>,
    /// The region's URL.
    pub region: String,
    /// `online` or `offline`.
    pub state: &'static str,
    /// The link to the region.
    pub link: LinkState,
    /// The queue.
    pub queue: QueueCounts,
    /// Age of the oldest command the region has not acknowledged, in seconds.
    pub oldest_unsent_age_seconds: Option<i64>,
    /// The change feed.
    pub feed: FeedState,
    /// Seconds since the region's state last reached the agent.
    pub feed_age_seconds: Option<i64>,
    /// The region's clock minus ours, in ms.
    pub clock_offset_ms: Option<i64>,
    /// The clocks differ by more than five minutes.
    pub clock_skew_warning: bool,
    /// Bytes the agent's store takes.
    pub disk_bytes: u64,
    /// The cap they may take.
    pub disk_cap_bytes: u64,
    /// Past 80% of the cap.
    pub disk_warning: bool,
    /// Past 95%: only sales and returns are taken.
    pub sales_only: bool,
    /// How long the region keeps an Idempotency-Key's answer, in seconds (once read).
    pub region_key_lifetime_seconds: Option<u64>,
    /// Times the status page was served.
    pub page_views: u64,
    /// Now, Unix ms.
    pub now_ms: i64,
}

/// Whether the region is reachable, from what both the forwarder and the feed last saw:
/// neither is failing, and at least one of them got through (a store with nothing to send
/// is online as soon as the feed answers).
fn reachable(link: &LinkState, feed: &FeedState) -> bool {
    let forwarding_fails = link.breaker_open || (!link.online && link.last_error.is_some());
    let feed_fails = feed.last_error.is_some();
    let got_through = link.online || feed.last_update_ms.is_some();
    !forwarding_fails && !feed_fails && got_through
}

/// Reads the status.
pub fn collect(state: &AgentState) -> Result<Status, AgentError> {
    let now = now_ms();
    let queue = state.store.counts()?;
    let link = state.link.state();
    let feed = state.feed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let clock_offset_ms = state.region.clock_offset_ms();
    let disk_bytes = state.store.disk_bytes();
    let cap = state.disk_cap_bytes.max(1);
    Ok(Status {
        store_id: state.store_id.clone(),
        locations: state.locations.iter().cloned().collect(),
        region: state.region.base().to_string(),
        state: if reachable(&link, &feed) {
            "online"
        } else {
            "offline"
        },
        oldest_unsent_age_seconds: queue.oldest_pending_ms.map(|t| (now - t).max(0) / 1000),
        feed_age_seconds: feed.last_update_ms.map(|t| (now - t).max(0) / 1000),
        clock_skew_warning: clock_offset_ms.is_some_and(|o| o.abs() > CLOCK_SKEW_WARNING_MS),
        clock_offset_ms,
        disk_warning: disk_bytes.saturating_mul(100) >= cap.saturating_mul(DISK_WARNING_PERCENT),
        sales_only: disk_bytes.saturating_mul(100) >= cap.saturating_mul(95),
        disk_bytes,
        disk_cap_bytes: state.disk_cap_bytes,
        link,
        queue,
        feed,
        region_key_lifetime_seconds: state.link.key_lifetime().map(|d| d.as_secs()),
        page_views: state.page_views.load(std::sync::atomic::Ordering::Relaxed),
        now_ms: now,
    })
}

/// The status in the Prometheus text format.
pub fn prometheus(s: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "stockflow_agent_online",
        "1 when the region answers and the breaker is closed.",
        f64::from(u8::from(s.state == "online")),
    );
    gauge(
        "stockflow_agent_queue_pending",
        "Commands the region has not acknowledged yet.",
        s.queue.pending as f64,
    );
    gauge(
        "stockflow_agent_queue_quarantined",
        "Commands the region refused for good, waiting for staff.",
        s.queue.quarantined as f64,
    );
    gauge(
        "stockflow_agent_oldest_unsent_age_seconds",
        "Age of the oldest command not acknowledged by the region.",
        s.oldest_unsent_age_seconds.unwrap_or(0) as f64,
    );
    gauge(
        "stockflow_agent_feed_age_seconds",
        "Seconds since the region's state last reached the agent (-1: never).",
        s.feed_age_seconds.map_or(-1.0, |a| a as f64),
    );
    gauge(
        "stockflow_agent_clock_offset_seconds",
        "The region's clock minus the agent's.",
        s.clock_offset_ms.unwrap_or(0) as f64 / 1000.0,
    );
    gauge(
        "stockflow_agent_disk_bytes",
        "Bytes the agent's store takes on disk.",
        s.disk_bytes as f64,
    );
    gauge(
        "stockflow_agent_disk_cap_bytes",
        "Bytes the agent's store may take.",
        s.disk_cap_bytes as f64,
    );
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn age(seconds: Option<i64>) -> String {
    match seconds {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s} s ago"),
        Some(s) if s < 7200 => format!("{} min ago", s / 60),
        Some(s) => format!("{} h ago", s / 3600),
    }
}

/// The status page: plain HTML and CSS, refreshed by the browser every 5 seconds.
pub fn page(s: &Status) -> String {
    let state_class = if s.state == "online" {
        "online"
    } else {
        "offline"
    };
    let mut warnings = Vec::new();
    if s.link.unauthorized {
        warnings.push("The region refuses this store's token: renew it.".to_string());
    }
    if s.queue.quarantined > 0 {
        warnings.push(format!(
            "{} command(s) refused by the region wait in the quarantine.",
            s.queue.quarantined
        ));
    }
    if s.clock_skew_warning {
        warnings.push(format!(
            "This till's clock is {} s off the region's.",
            s.clock_offset_ms.unwrap_or(0) / 1000
        ));
    }
    if s.sales_only {
        warnings.push("The queue is nearly full: only sales and returns are taken.".into());
    } else if s.disk_warning {
        warnings.push("The queue's disk is over 80% full.".into());
    }
    let warnings: String = warnings
        .iter()
        .map(|w| format!("<li>{}</li>", escape(w)))
        .collect();
    let last_error = s
        .link
        .last_error
        .as_deref()
        .map(|e| format!("<p class=\"error\">Last error: {}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stockflow store agent: {store}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; color: #1a1a1a; }}
.state {{ display: inline-block; padding: .3rem .8rem; border-radius: .4rem; font-weight: bold; }}
.online {{ background: #d8f5d8; color: #145214; }}
.offline {{ background: #fde2e2; color: #7a1111; }}
table {{ border-collapse: collapse; margin-top: 1rem; }}
td {{ padding: .2rem 1rem .2rem 0; }}
.warn li {{ color: #7a4a00; }}
.error {{ color: #7a1111; }}
</style>
</head>
<body>
<h1>Store {store}</h1>
<p><span id="state" class="state {state_class}">{state}</span></p>
<ul class="warn">{warnings}</ul>
<table>
<tr><td>Waiting to be sent</td><td id="pending">{pending}</td></tr>
<tr><td>Oldest waiting</td><td id="oldest">{oldest}</td></tr>
<tr><td>In quarantine</td><td id="quarantined">{quarantined}</td></tr>
<tr><td>Last region update</td><td id="feed">{feed}</td></tr>
<tr><td>Last command acknowledged</td><td>{acked}</td></tr>
<tr><td>Clock offset from the region</td><td>{offset}</td></tr>
<tr><td>Queue on disk</td><td>{disk} of {cap} MiB</td></tr>
<tr><td>Region</td><td>{region}</td></tr>
</table>
{last_error}
<p><small>Updated {now}; this page refreshes every 5 seconds.</small></p>
</body>
</html>
"#,
        store = escape(&s.store_id),
        state = s.state,
        pending = s.queue.pending,
        oldest = age(s.oldest_unsent_age_seconds),
        quarantined = s.queue.quarantined,
        feed = age(s.feed_age_seconds),
        acked = age(s
            .link
            .last_acknowledged_ms
            .map(|t| (s.now_ms - t).max(0) / 1000)),
        offset = s.clock_offset_ms.map_or("unknown".to_string(), |o| format!(
            "{:.1} s",
            o as f64 / 1000.0
        )),
        disk = s.disk_bytes / (1 << 20),
        cap = s.disk_cap_bytes / (1 << 20),
        region = escape(&s.region),
        now = crate::http::model::rfc3339(s.now_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::{FeedState, LinkState, reachable};

    #[test]
    fn online_needs_one_contact_and_no_failure() {
        let never = (LinkState::default(), FeedState::default());
        assert!(!reachable(&never.0, &never.1), "nothing heard yet");
        let fed = FeedState {
            last_update_ms: Some(1),
            ..FeedState::default()
        };
        assert!(
            reachable(&LinkState::default(), &fed),
            "nothing to send, feed answers"
        );
        let forwarded = LinkState {
            online: true,
            ..LinkState::default()
        };
        assert!(reachable(&forwarded, &FeedState::default()));
        let feed_down = FeedState {
            last_update_ms: Some(1),
            last_error: Some("connection refused".into()),
            ..FeedState::default()
        };
        assert!(
            !reachable(&forwarded, &feed_down),
            "the feed lost the region"
        );
        let breaker = LinkState {
            breaker_open: true,
            ..LinkState::default()
        };
        assert!(!reachable(&breaker, &fed), "sending is paused");
        let failing = LinkState {
            last_error: Some("timeout".into()),
            consecutive_failures: 1,
            ..LinkState::default()
        };
        assert!(
            !reachable(&failing, &fed),
            "the last send did not get through"
        );
    }
}
