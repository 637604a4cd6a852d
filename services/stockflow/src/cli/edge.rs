//! The edge cache's settings (`--edge-*`): the purge worker where the projector runs, the
//! edge TTL where the query API runs. See docs/edge-cache.md.

use clap::Args;

use super::{Result, settings};
use crate::app;

/// The edge cache in front of the query API (Varnish with xkey, or a CDN speaking the same
/// purge contract). Off unless configured.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Purge the edge cache by surrogate key after projection: `PURGE` requests with an
    /// `xkey-purge: sku:<sku>` header go to this URL (the sample VCL's contract,
    /// config/samples/varnish/stockflow.vcl). Used where the projector runs.
    #[arg(long, env = "STOCKFLOW_EDGE_PURGE_URL")]
    pub edge_purge_url: Option<String>,
    /// The cache's base URL for warming purged SKUs again (default: the purge URL).
    #[arg(long, env = "STOCKFLOW_EDGE_WARM_URL")]
    pub edge_warm_url: Option<String>,
    /// SKUs warmed per purge batch at most, the most cached first; 0: no warming.
    #[arg(long, env = "STOCKFLOW_EDGE_WARM_MAX", default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub edge_warm_max: u64,
    /// How long the edge may keep a stock or availability answer (`Surrogate-Control:
    /// max-age`), in seconds; browsers still get `max-age=1`. Set it only where the
    /// projector purges the cache (`--edge-purge-url`): the purge, not this TTL, keeps
    /// the edge current. Used where the query API runs.
    #[arg(long, env = "STOCKFLOW_EDGE_TTL_SECONDS", value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub edge_ttl_seconds: Option<u32>,
}

impl EdgeArgs {
    /// Sets the edge cache's settings on `config`; refuses a URL that is not http(s).
    pub fn apply(&self, config: &mut app::AppConfig) -> Result<()> {
        let url = |flag: &str, value: &String| -> Result<String> {
            match reqwest::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(value.clone()),
                _ => Err(settings(format!(
                    "{flag} must be an http(s) URL, not {value:?}"
                ))),
            }
        };
        config.edge_cache.ttl_seconds = self.edge_ttl_seconds;
        config.edge_cache.purge = match &self.edge_purge_url {
            None => None,
            Some(purge) => {
                let mut purge =
                    crate::workers::edge_purge::PurgeConfig::new(url("--edge-purge-url", purge)?);
                if let Some(warm) = &self.edge_warm_url {
                    purge.warm_url = Some(url("--edge-warm-url", warm)?);
                }
                purge.warm_max = usize::try_from(self.edge_warm_max).unwrap_or(usize::MAX);
                Some(purge)
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Edge {
        #[command(flatten)]
        edge: EdgeArgs,
    }

    #[test]
    fn the_edge_cache_is_off_unless_configured_and_refuses_a_bad_url() {
        let edge = |args: &[&str]| {
            let cli = Edge::parse_from(std::iter::once("stockflow").chain(args.iter().copied()));
            let mut config = app::AppConfig::new(PathBuf::new());
            cli.edge.apply(&mut config).map(|()| config.edge_cache)
        };
        let off = edge(&[]).expect("valid");
        assert!(off.purge.is_none() && off.ttl_seconds.is_none());
        let on = edge(&[
            "--edge-purge-url=http://127.0.0.1:16081/",
            "--edge-ttl-seconds=30",
        ])
        .expect("valid");
        let purge = on.purge.expect("purging");
        assert_eq!(purge.warm_url.as_deref(), Some("http://127.0.0.1:16081/"));
        assert_eq!(on.ttl_seconds, Some(30));
        assert!(edge(&["--edge-purge-url=127.0.0.1:16081"]).is_err());
    }
}
