//! `spool_oldest_event_age_seconds` through the binary: 0 with an empty spool, the age of the
//! oldest spooled event (growing) while the broker is cut off, and 0 again once the spool is
//! drained.

use crate::common;

use std::time::{Duration, Instant};

use common::load::{self, metric, wait_metric};
use common::proxy::cut_off;
use common::*;

const AGE: &str = "webhook_bridge_spool_oldest_event_age_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_spooled_event_age_grows_while_cut_off_and_is_zero_once_drained() {
    let (proxy, _, bridge, mut consumer) = cut_off(|_| {}).await;
    assert_eq!(metric(&bridge.metrics().await, AGE), Some(0.0), "empty");

    let first_sent = Instant::now();
    for i in 0..3 {
        let body = load::wegocod_body(&format!("age-{i}"));
        let resp = bridge
            .post_signed("wegocod", "/webhooks/wegocod", WEGOCOD_SECRET, &body)
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), r#"{"spooled":1}"#);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = bridge.metrics().await;
    assert_eq!(metric(&m, "webhook_bridge_spool_events"), Some(3.0));
    let age = metric(&m, AGE).expect("exported");
    // Timestamps are whole seconds: the age is the elapsed time rounded either way.
    let elapsed = first_sent.elapsed().as_secs_f64();
    assert!(
        (2.0..=elapsed + 1.0).contains(&age),
        "age {age} after {elapsed:.1}s"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = metric(&bridge.metrics().await, AGE).expect("exported");
    assert!(later > age, "the age grows: {age} then {later}");

    proxy.restore();
    let arrived = consumer.take(3, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 3, "the spool drains");
    wait_metric(
        &bridge,
        "webhook_bridge_spool_events",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    wait_metric(&bridge, AGE, 0.0, Duration::from_secs(5)).await;
    bridge.cleanup().await;
}
