//! Where a bridge request's time goes, from the bridge's own histograms.
//!
//! The bridge exports `request_duration_seconds` (handler start to answer) and
//! `publish_confirm_seconds` (first publish to last confirm). Scraped before and after a phase,
//! their sums and counts give the mean time inside the handler and the mean wait for the broker;
//! the load generator's own mean latency minus the handler's time is what a request spends
//! outside the handler: in the kernel's sockets, in hyper, queued for a CPU, and in the load
//! generator.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;

use crate::client;

/// Sums (seconds) and counts of the two histograms at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Snapshot {
    handler_sum: f64,
    handler_count: f64,
    confirm_sum: f64,
    confirm_count: f64,
    /// `webhook_bridge_allocations_total`: the bridge process's heap allocations so far.
    allocations: f64,
}

/// Mean times over the requests between two snapshots, in seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Split {
    pub requests: f64,
    pub handler: f64,
    pub confirm_wait: f64,
    /// Heap allocations of the whole bridge process per request (0 if it does not count them).
    pub allocations: f64,
}

impl Snapshot {
    /// Read the sums and counts for `endpoint` from Prometheus text.
    pub fn parse(text: &str, endpoint: &str) -> Self {
        let label = format!("endpoint=\"{endpoint}\"");
        let mut s = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match name.split_once('{').map_or((name, ""), |(n, l)| (n, l)) {
                ("webhook_bridge_request_duration_seconds_sum", l) if l.contains(&label) => {
                    &mut s.handler_sum
                }
                ("webhook_bridge_request_duration_seconds_count", l) if l.contains(&label) => {
                    &mut s.handler_count
                }
                ("webhook_bridge_publish_confirm_seconds_sum", _) => &mut s.confirm_sum,
                ("webhook_bridge_publish_confirm_seconds_count", _) => &mut s.confirm_count,
                ("webhook_bridge_allocations_total", _) => &mut s.allocations,
                _ => continue,
            };
            *slot = value;
        }
        s
    }

    /// Scrape the bridge's admin port; `None` if it does not answer.
    pub async fn scrape(admin_port: u16, endpoint: &str) -> Option<Self> {
        let pool = client::Pool::new(
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
            client::Kind::Hyper,
        );
        let req = http::Request::get("/metrics")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let (status, body) = pool.send(req).await.ok()?;
        if status != http::StatusCode::OK {
            return None;
        }
        Some(Self::parse(&String::from_utf8_lossy(&body), endpoint))
    }

    /// Means over what happened since `before`.
    pub fn since(&self, before: &Self) -> Split {
        let mean = |sum: f64, count: f64| if count > 0.0 { sum / count } else { 0.0 };
        Split {
            requests: self.handler_count - before.handler_count,
            handler: mean(
                self.handler_sum - before.handler_sum,
                self.handler_count - before.handler_count,
            ),
            confirm_wait: mean(
                self.confirm_sum - before.confirm_sum,
                self.confirm_count - before.confirm_count,
            ),
            allocations: mean(
                self.allocations - before.allocations,
                self.handler_count - before.handler_count,
            ),
        }
    }
}

impl Split {
    /// Weighted by requests, so rounds of different rates count by what they carried.
    pub fn combine(parts: &[Split]) -> Split {
        let requests: f64 = parts.iter().map(|p| p.requests).sum();
        if requests <= 0.0 {
            return Split::default();
        }
        let weighted =
            |f: fn(&Split) -> f64| parts.iter().map(|p| f(p) * p.requests).sum::<f64>() / requests;
        Split {
            requests,
            handler: weighted(|p| p.handler),
            confirm_wait: weighted(|p| p.confirm_wait),
            allocations: weighted(|p| p.allocations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP webhook_bridge_request_duration_seconds Time from request to answer.
webhook_bridge_request_duration_seconds_bucket{endpoint="a",provider="wegocod",le="0.005"} 3
webhook_bridge_request_duration_seconds_sum{endpoint="a",provider="wegocod"} 0.5
webhook_bridge_request_duration_seconds_count{endpoint="a",provider="wegocod"} 100
webhook_bridge_request_duration_seconds_sum{endpoint="ab",provider="isendu"} 9
webhook_bridge_request_duration_seconds_count{endpoint="ab",provider="isendu"} 9
webhook_bridge_publish_confirm_seconds_sum 0.4
webhook_bridge_publish_confirm_seconds_count 100
webhook_bridge_allocations_total 12345
"#;

    #[test]
    fn parses_one_endpoint_and_the_confirm_histogram() {
        let s = Snapshot::parse(TEXT, "a");
        let split = s.since(&Snapshot::default());
        assert_eq!(split.requests, 100.0);
        assert!((split.handler - 0.005).abs() < 1e-12);
        assert!((split.confirm_wait - 0.004).abs() < 1e-12);
        assert!((split.allocations - 123.45).abs() < 1e-9);
    }

    #[test]
    fn combine_weights_by_requests() {
        let a = Split {
            requests: 100.0,
            handler: 1.0,
            confirm_wait: 0.5,
            allocations: 100.0,
        };
        let b = Split {
            requests: 300.0,
            handler: 2.0,
            confirm_wait: 1.5,
            allocations: 200.0,
        };
        let c = Split::combine(&[a, b]);
        assert_eq!(c.requests, 400.0);
        assert!((c.handler - 1.75).abs() < 1e-12);
        assert!((c.confirm_wait - 1.25).abs() < 1e-12);
        assert!((c.allocations - 175.0).abs() < 1e-9);
    }
}
