//! Surrogate keys for an edge cache (Varnish with `xkey`, Fastly, Cloudflare): every
//! public query response names the SKUs, locations and regions it shows, so the platform
//! can purge exactly the objects a change made stale instead of waiting for them to expire.
//!
//! - `Surrogate-Key` (Varnish xkey via the sample VCL, Fastly; space-separated) and
//!   `Cache-Tag` (Cloudflare; comma-separated) carry the same tags: `sku:<sku>`,
//!   `loc:<location>`, `region:<region>`, `search`, and [`ALL_TAG`] on every tagged
//!   response, which purges everything at once.
//! - The purge worker (`workers::edge_purge`) builds its tags with the same functions, so a
//!   tag the API sends and a tag the worker purges can never drift apart.
//! - `Surrogate-Control: max-age=N` (only with `--edge-ttl-seconds`, only on responses whose
//!   every tag is purged on change) lets the edge keep an object longer than browsers may:
//!   the purge, not the TTL, ends its life.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// On every tagged response: purging it empties the whole cache of stockflow's objects
/// (what the purge worker does when its queue overflows).
pub(crate) const ALL_TAG: &str = "stockflow";

/// On search responses, whose hits can change with any SKU's stock or catalog.
pub(crate) const SEARCH_TAG: &str = "search";

/// How long an edge (or a browser) may keep serving a response while the origin fails:
/// shoppers still see stock an hour old rather than an error; reservations are checked
/// against the write side anyway.
pub(crate) const STALE_IF_ERROR_SECS: u32 = 3600;

/// At most this many tags on one response: keeps the header under the 8 KiB line limit of
/// Varnish (`http_resp_hdr_len`) and Cloudflare's 16 KiB. The SKU tags come first, so
/// only location and region tags are ever dropped, and those are never purged by the
/// platform (they are there for an operator's manual purge).
const MAX_TAGS: usize = 100;

static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// The tag of a SKU.
pub(crate) fn sku_tag(sku: &str) -> String {
    tag("sku", sku)
}

/// The tag of a location.
pub(crate) fn location_tag(location: &str) -> String {
    tag("loc", location)
}

/// The tag of a region.
pub(crate) fn region_tag(region: &str) -> String {
    tag("region", region)
}

/// `kind:id`, with every byte outside `[A-Za-z0-9._:-]` percent-encoded: ids the domain
/// accepts already are safe tokens, but a tag must never carry a space or a comma (tag
/// separators) or a byte a header cannot hold, whatever reaches it.
fn tag(kind: &str, id: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 1 + id.len());
    out.push_str(kind);
    out.push(':');
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The tags of one response, and whether the platform purges it on every change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tags {
    tags: Vec<String>,
    /// Every change to what the response shows purges one of its tags, so an edge may
    /// keep it for `Surrogate-Control`'s longer TTL. Search is not exact: a SKU that is
    /// not among the hits can start matching.
    exact: bool,
}

impl Tags {
    /// Tags of a response purged whenever it changes.
    pub(crate) fn exact() -> Self {
        Self {
            tags: Vec::new(),
            exact: true,
        }
    }

    /// Tags of a response that can change without a purge of its tags (a channel's or a
    /// location's settings): a purge of its SKU still reaches it, but the edge keeps it only
    /// for `Cache-Control`'s short TTL.
    pub(crate) fn inexact() -> Self {
        Self {
            tags: Vec::new(),
            exact: false,
        }
    }

    /// Tags of a response that can change without a purge of its tags (search).
    pub(crate) fn approximate() -> Self {
        Self {
            tags: vec![SEARCH_TAG.to_string()],
            exact: false,
        }
    }

    /// Adds `sku`'s tag.
    pub(crate) fn sku(mut self, sku: &str) -> Self {
        self.push(sku_tag(sku));
        self
    }

    /// Adds `location`'s tag.
    pub(crate) fn location(mut self, location: &str) -> Self {
        self.push(location_tag(location));
        self
    }

    /// Adds `region`'s tag.
    pub(crate) fn region(mut self, region: &str) -> Self {
        self.push(region_tag(region));
        self
    }

    fn push(&mut self, tag: String) {
        if self.tags.len() < MAX_TAGS && !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    /// Sets `Surrogate-Key`, `Cache-Tag` and, for an exact response with an edge TTL,
    /// `Surrogate-Control`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, edge_ttl_seconds: Option<u32>) {
        let mut value = String::from(ALL_TAG);
        for tag in &self.tags {
            value.push(' ');
            value.push_str(tag);
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(SURROGATE_KEY.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(&value.replace(' ', ",")) {
            headers.insert(CACHE_TAG.clone(), v);
        }
        if let (true, Some(ttl)) = (self.exact, edge_ttl_seconds)
            && let Ok(v) = HeaderValue::from_str(&format!(
                "max-age={ttl}, stale-if-error={STALE_IF_ERROR_SECS}"
            ))
        {
            headers.insert(SURROGATE_CONTROL.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_and_surrogate_control_agree_on_stale_if_error() {
        let stale = format!("stale-if-error={STALE_IF_ERROR_SECS}");
        assert!(crate::http::queries::CACHE_CONTROL.contains(&stale));
    }

    #[test]
    fn tags_are_safe_tokens() {
        assert_eq!(sku_tag("SKU-1_a.b:c"), "sku:SKU-1_a.b:c");
        assert_eq!(location_tag("a b,c/é"), "loc:a%20b%2Cc%2F%C3%A9");
        assert_eq!(region_tag("north"), "region:north");
    }

    #[test]
    fn headers_carry_every_tag_once_and_the_edge_ttl_only_when_exact() {
        let mut h = HeaderMap::new();
        Tags::exact()
            .sku("A")
            .location("s1")
            .location("s1")
            .apply(&mut h, Some(30));
        assert_eq!(h["surrogate-key"], "stockflow sku:A loc:s1");
        assert_eq!(h["cache-tag"], "stockflow,sku:A,loc:s1");
        assert_eq!(h["surrogate-control"], "max-age=30, stale-if-error=3600");

        let mut h = HeaderMap::new();
        Tags::approximate().sku("A").apply(&mut h, Some(30));
        assert_eq!(h["surrogate-key"], "stockflow search sku:A");
        assert!(h.get("surrogate-control").is_none());

        let mut h = HeaderMap::new();
        Tags::exact().sku("A").apply(&mut h, None);
        assert!(h.get("surrogate-control").is_none());
    }

    #[test]
    fn many_locations_never_crowd_out_the_sku() {
        let mut tags = Tags::exact().sku("A");
        for i in 0..500 {
            tags = tags.location(&format!("store-{i}"));
        }
        let mut h = HeaderMap::new();
        tags.apply(&mut h, None);
        let value = h["surrogate-key"].to_str().unwrap_or_default().to_string();
        assert!(value.starts_with("stockflow sku:A loc:store-0"));
        assert_eq!(value.split(' ').count(), MAX_TAGS + 1);
        assert!(value.len() < 8 * 1024);
    }
}
