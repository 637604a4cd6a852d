//! Reading a role's `/metrics` (Prometheus text) over the measured window: a counter's
//! growth, and a histogram's quantiles from the growth of its buckets, for roles that run
//! as their own processes and report only through metrics.

use std::net::SocketAddr;

use hyper::{Method, StatusCode};

use crate::conn::Conn;

/// One scrape of the metrics a bench reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    text: String,
}

impl Scrape {
    /// `GET /metrics` of the process at `addr`.
    pub async fn of(addr: SocketAddr) -> Result<Self, String> {
        let mut conn = Conn::open(addr).await?;
        let (status, body) = conn.send(Method::GET, "/metrics", None, None).await?;
        if status != StatusCode::OK {
            return Err(format!("GET http://{addr}/metrics answered {status}"));
        }
        Ok(Self {
            text: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The sum over every series of `name` (all label sets).
    pub fn total(&self, name: &str) -> f64 {
        self.series(name).map(|(_, value)| value).sum()
    }

    /// Cumulative counts of histogram `name` by upper bound (`+Inf` last), summed over its
    /// label sets.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (labels, value) in self.series(&format!("{name}_bucket")) {
            let Some(le) = label(labels, "le") else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                }
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, count)) => *count += value,
                None => buckets.push((bound, value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }

    /// `(labels, value)` of each sample line of metric `name` exactly.
    fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.text.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            Some((labels, value.trim().parse::<f64>().ok()?))
        })
    }
}

/// The value of `key` in a label set `a="x",le="0.1"`.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// The growth of cumulative buckets from `start` to `end` (same bounds).
pub fn growth(start: &[(f64, f64)], end: &[(f64, f64)]) -> Vec<(f64, f64)> {
    end.iter()
        .map(|(bound, count)| {
            let before = start
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, (count - before).max(0.0))
        })
        .collect()
}

/// Quantile `q` of cumulative `buckets`, interpolated linearly inside its bucket as
/// Prometheus's `histogram_quantile` does; `Above(bound)` when it falls past the last
/// finite bound. `None` when the buckets hold nothing.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<Quantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(Quantile::Above(lower.0));
            }
            let inside = count - lower.1;
            let share = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(Quantile::At(lower.0 + (bound - lower.0) * share));
        }
        lower = (bound, count);
    }
    Some(Quantile::Above(lower.0))
}

/// A quantile read from buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantile {
    /// About this value.
    At(f64),
    /// Past the histogram's last finite bound, this.
    Above(f64),
}

impl Quantile {
    /// In milliseconds, of a histogram in seconds: `≈ 55 ms`, or `> 10000 ms`.
    pub fn ms(self) -> String {
        match self {
            Quantile::At(s) => format!("≈ {:.0} ms", s * 1000.0),
            Quantile::Above(s) => format!("> {:.0} ms", s * 1000.0),
        }
    }
}

/// The share of observations at most `bound` (which must be one of the buckets' bounds:
/// then it is exact, not interpolated).
pub fn share_within(buckets: &[(f64, f64)], bound: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    let within = buckets.iter().find(|(b, _)| *b == bound)?.1;
    (total > 0.0).then(|| within / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE stockflow_events_projected_total counter
stockflow_events_projected_total 1200
stockflow_events_projected_total_other 5
# TYPE stockflow_projection_lag_seconds histogram
stockflow_projection_lag_seconds_bucket{le=\"0.01\"} 100
stockflow_projection_lag_seconds_bucket{le=\"0.1\"} 900
stockflow_projection_lag_seconds_bucket{le=\"1\"} 1000
stockflow_projection_lag_seconds_bucket{le=\"+Inf\"} 1000
stockflow_projection_lag_seconds_sum 50
stockflow_projection_lag_seconds_count 1000
stockflow_consumer_lag_records{partition=\"0\"} 3
stockflow_consumer_lag_records{partition=\"1\"} 4
";

    fn scrape() -> Scrape {
        Scrape { text: TEXT.into() }
    }

    #[test]
    fn a_counter_is_read_by_its_exact_name_over_every_label_set() {
        assert_eq!(scrape().total("stockflow_events_projected_total"), 1200.0);
        assert_eq!(scrape().total("stockflow_consumer_lag_records"), 7.0);
        assert_eq!(scrape().total("stockflow_missing"), 0.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        let buckets = scrape().buckets("stockflow_projection_lag_seconds");
        assert_eq!(buckets.len(), 4);
        // The 500th of 1000 falls in (0.01, 0.1], 400 of its 800 in.
        let Some(Quantile::At(p50)) = quantile(&buckets, 0.5) else {
            panic!("p50 inside the buckets")
        };
        assert!((p50 - 0.055).abs() < 1e-9, "{p50}");
        let Some(Quantile::At(p99)) = quantile(&buckets, 0.99) else {
            panic!("p99 inside the buckets")
        };
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(Quantile::At(0.055).ms(), "≈ 55 ms");
        assert_eq!(share_within(&buckets, 0.1), Some(0.9));
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn the_window_counts_only_what_grew_in_it() {
        let start = vec![(0.1, 10.0), (f64::INFINITY, 10.0)];
        let end = vec![(0.1, 15.0), (f64::INFINITY, 30.0)];
        let grown = growth(&start, &end);
        assert_eq!(grown, vec![(0.1, 5.0), (f64::INFINITY, 20.0)]);
        // Past the last finite bound it says so, not a number it cannot know.
        assert_eq!(quantile(&grown, 0.99), Some(Quantile::Above(0.1)));
        assert_eq!(Quantile::Above(10.0).ms(), "> 10000 ms");
    }
}
