//! `/metrics` (API.md §9): requests, latency, visits, rate limits, the writer and the
//! database, with labels from bounded sets only.
//!
//! The Prometheus recorder is process-global and shared by every test of this binary, so
//! metric assertions compare a value before and after, and only ever ask for "at least".

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};

use crate::common::{
    TestApp, assert_too_many, bulk_request, get, header, ip, metric, visit_request,
};

fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        !l.starts_with('#')
            && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    })
}

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = header(&reply, "content-type").unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    reply.text()
}

#[tokio::test]
async fn metrics_show_requests_latency_visits_rate_limits_the_writer_and_the_database() {
    let app = TestApp::with(|args| {
        args.rate_limit_per_minute = 2;
        args.bulk_rate_limit_per_minute = 1;
        args.ip_rate_per_second = 1;
        args.ip_burst = 1_000;
    });
    let before = scrape(&app).await;
    let client = ip("198.51.100.40");
    let url = "https://metrics.example/";
    for _ in 0..3 {
        app.send_from(client, visit_request(url)).await;
    }
    let bulk = app.send_from(client, bulk_request(&[url, url])).await;
    assert_eq!(bulk.json()["visits_rejected"], 1);
    // Exhaust a small ceiling on its own app to see the `ip` limiter counted.
    let tight = TestApp::with(|args| {
        args.ip_rate_per_second = 1;
        args.ip_burst = 1;
    });
    tight.send_from(client, get("/health")).await;
    assert_too_many(&tight.send_from(client, get("/health")).await);

    let after = scrape(&app).await;
    let grew = |name: &str, labels: &[(&str, &str)], by: f64| {
        let (was, is) = (metric(&before, name, labels), metric(&after, name, labels));
        assert!(
            is - was >= by,
            "{name}{labels:?}: {was} -> {is}, expected +{by}"
        );
    };
    let visit_200 = [("route", "/visit"), ("method", "POST"), ("status", "200")];
    grew("footfall_http_requests_total", &visit_200, 2.0);
    grew(
        "footfall_http_requests_total",
        &[("route", "/visit"), ("status", "429")],
        1.0,
    );
    grew(
        "footfall_http_request_duration_seconds_count",
        &[("route", "/visit"), ("method", "POST")],
        3.0,
    );
    assert!(
        after.contains("footfall_http_request_duration_seconds_bucket{"),
        "latency is a histogram"
    );
    grew("footfall_visits_recorded_total", &[], 3.0);
    grew("footfall_rate_limited_total", &[("limiter", "visit")], 1.0);
    grew("footfall_rate_limited_total", &[("limiter", "bulk")], 1.0);
    grew("footfall_rate_limited_total", &[("limiter", "ip")], 1.0);
    grew("footfall_batch_visits_count", &[], 1.0);
    grew("footfall_commit_seconds_count", &[], 1.0);
    assert!(after.contains("footfall_batch_visits_bucket{"));
    assert!(after.contains("footfall_commit_seconds_bucket{"));
    assert!(has_series(&after, "footfall_write_queue_depth"));
    assert!(has_series(&after, "footfall_roll_up_pending_writes"));
    // The visits above are rolled up once writes pause, by a routine roll-up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let roll_ups = loop {
        let count = metric(&scrape(&app).await, "footfall_roll_up_seconds_count", &[]);
        if count > 0.0 || std::time::Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(roll_ups > 0.0, "no roll-up timed");
    let reason = if crate::common::on_postgres_now() {
        "interval"
    } else {
        "idle"
    };
    let counted = metric(
        &scrape(&app).await,
        "footfall_roll_ups_total",
        &[("reason", reason)],
    );
    assert!(counted > 0.0, "no roll-up counted with reason {reason}");
    assert!(has_series(&after, "footfall_rate_limiter_keys"));
    assert!(has_series(&after, "footfall_ip_ceiling_keys"));
    assert!(metric(&after, "footfall_database_bytes", &[]) > 0.0);
    assert!(after.contains("# HELP footfall_http_requests_total"));
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_clients_send() {
    let app = TestApp::new();
    for i in 0..5 {
        let request = Request::builder()
            .method(Method::from_bytes(format!("FUZZ{i}").as_bytes()).unwrap())
            .uri(format!("/random/path/{i}"))
            .body(Body::empty())
            .unwrap();
        let reply = app.send(request).await;
        assert!(reply.status.is_client_error(), "{}", reply.status);
        app.get(&format!("/stats/https://labels.example/{i}")).await;
    }
    let text = scrape(&app).await;
    assert!(!text.contains("FUZZ"), "a method became a label");
    assert!(!text.contains("/random/path"), "a raw path became a label");
    assert!(
        !text.contains("labels.example"),
        "a raw path became a label"
    );
    assert!(
        metric(
            &text,
            "footfall_http_requests_total",
            &[("method", "OTHER")]
        ) >= 5.0
    );
    assert!(
        metric(
            &text,
            "footfall_http_requests_total",
            &[("route", "/stats/{*url}")]
        ) >= 5.0
    );
}

#[tokio::test]
async fn histogram_samples_are_drained_even_when_nobody_scrapes() {
    // The recorder is installed without the exporter's own upkeep task; footfall runs it on a
    // thread of its own so unscraped histograms do not grow forever.
    let _app = TestApp::new();
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "metrics-upkeep"),
        "no upkeep thread among {names:?}"
    );
}

crate::on_postgres!(
    metrics_show_requests_latency_visits_rate_limits_the_writer_and_the_database,
    metric_labels_stay_bounded_whatever_clients_send,
    histogram_samples_are_drained_even_when_nobody_scrapes,
);
