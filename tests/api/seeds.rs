//! API.md §5–§8: per-page counters, calendar breakdowns, top domains, and exact counting under
//! concurrency across restarts and crashes.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{ServerProcess, TestApp, open_store};

#[tokio::test]
async fn page_counters_count_exactly_and_say_where_the_answer_came_from() {
    let app = TestApp::new();
    let reply = app.get("/visits/home").await;
    assert_eq!(reply.json(), json!({"count": 0, "served_via": "sqlite"}));
    for _ in 0..3 {
        let reply = app.post_json("/visit/home", &json!({})).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json(),
            json!({"status": "success", "message": "Visit recorded for page home"})
        );
    }
    // Updated by the writer after its commit: served from memory, and exact.
    assert_eq!(
        app.get("/visits/home").await.json(),
        json!({"count": 3, "served_via": "cache"})
    );
    // Another process (or node) commits to the database: the cache is no longer trusted.
    let other = open_store(&app.db);
    let visit = r#"{"url":"https://a.com/","ip":"1.1.1.1","timestamp":"2025-01-01 00:00:00"}"#;
    footfall::cli::import_into(
        &other,
        &Default::default(),
        std::io::Cursor::new(visit),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        app.get("/visits/home").await.json(),
        json!({"count": 3, "served_via": "sqlite"})
    );
    assert_eq!(
        app.get("/visits/home").await.json(),
        json!({"count": 3, "served_via": "cache"})
    );
    // Another process counts on the same page behind the server's back.
    for _ in 0..38 {
        other.count_page("home").await.unwrap();
    }
    other.close().await;
    assert_eq!(
        app.get("/visits/home").await.json(),
        json!({"count": 41, "served_via": "sqlite"})
    );
}

#[tokio::test]
async fn page_ids_are_validated() {
    let app = TestApp::new();
    let long = "a".repeat(257);
    for bad in [
        "/visit/a%20b",
        "/visit/%27%20OR%201%3D1",
        &format!("/visit/{long}"),
    ] {
        let reply = app.post_json(bad, &json!({})).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(reply.detail().contains("page_id"));
    }
    assert_eq!(
        app.get("/visits/a%2Fb").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.post_json("/visit/Ok-1.2_~", &json!({})).await.status,
        StatusCode::OK
    );
}

async fn import(app: &TestApp, rows: &[(&str, &str, &str)]) {
    let jsonl: String = rows
        .iter()
        .enumerate()
        .map(|(i, (url, ts, event))| {
            format!(
                "{}\n",
                json!({"url": url, "ip": format!("10.0.0.{}", i % 200), "timestamp": ts, "event": event})
            )
        })
        .collect();
    let report = app.import_jsonl(&jsonl).await;
    assert_eq!(report.skipped, 0, "{report:?}");
}

fn data(body: &Value) -> Vec<(String, i64)> {
    body["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn breakdowns_list_every_segment_of_the_period_with_zeros() {
    let app = TestApp::new();
    import(
        &app,
        &[
            ("https://acme.com/a", "2013-02-01 10:15:00", "pageview"),
            ("https://www.acme.com/b", "2013-02-01 10:15:59", "pageview"),
            ("https://acme.com/a", "2013-02-01 10:59:00", "pageview"),
            ("https://acme.com/a", "2013-02-28 23:00:00", "pageview"),
            ("https://acme.com/a", "2013-02-28 23:00:00", "order"),
            ("https://acme.com/a", "2013-12-31 23:59:59", "pageview"),
            ("https://other.org/", "2013-02-01 10:15:00", "pageview"),
            ("https://acme.com/a", "2014-01-01 00:00:00", "pageview"),
        ],
    )
    .await;
    let year = app.get("/breakdown/acme.com/pageview/2013").await.json();
    assert_eq!(
        (
            year["site"].clone(),
            year["event"].clone(),
            year["year"].clone(),
            year["month"].clone()
        ),
        (
            json!("acme.com"),
            json!("pageview"),
            json!(2013),
            Value::Null
        )
    );
    let months = data(&year);
    assert_eq!(months.len(), 12);
    assert_eq!(months[0], ("1".into(), 0));
    assert_eq!(months[1], ("2".into(), 4));
    assert_eq!(months[11], ("12".into(), 1));

    let month = app.get("/breakdown/acme.com/pageview/2013/2").await.json();
    assert_eq!(month["month"], 2);
    let days = data(&month);
    assert_eq!(days.len(), 28);
    assert_eq!(days[0], ("1".into(), 3));
    assert_eq!(days[27], ("28".into(), 1));
    assert_eq!(days.iter().map(|d| d.1).sum::<i64>(), 4);

    let day = app
        .get("/breakdown/acme.com/pageview/2013/02/01")
        .await
        .json();
    let hours = data(&day);
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[0].0, "0");
    assert_eq!(hours[10], ("10".into(), 3));

    let hour = app
        .get("/breakdown/acme.com/pageview/2013/2/1/10")
        .await
        .json();
    assert_eq!(
        (hour["day"].clone(), hour["hour"].clone()),
        (json!(1), json!(10))
    );
    let minutes = data(&hour);
    assert_eq!(minutes.len(), 60);
    assert_eq!(minutes[15], ("15".into(), 2));
    assert_eq!(minutes[59], ("59".into(), 1));

    let all = app.get("/breakdown/all/pageview/2013/2/1/10").await.json();
    assert_eq!(data(&all)[15], ("15".into(), 3), "all sites");
    let orders = app.get("/breakdown/acme.com/order/2013/2").await.json();
    assert_eq!(data(&orders)[27], ("28".into(), 1));
    let leap = app.get("/breakdown/all/pageview/2024/2").await.json();
    assert_eq!(data(&leap).len(), 29);
    let unknown = app.get("/breakdown/nobody.net/pageview/2013").await.json();
    assert!(data(&unknown).iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn impossible_dates_and_bad_names_are_422() {
    let app = TestApp::new();
    for bad in [
        "/breakdown/all/pageview/2013/2/29",
        "/breakdown/all/pageview/2013/13",
        "/breakdown/all/pageview/2013/0",
        "/breakdown/all/pageview/2013/1/32",
        "/breakdown/all/pageview/2013/1/1/24",
        "/breakdown/all/pageview/abc",
        "/breakdown/all/pageview/99999",
        "/breakdown/all/Page%20View/2013",
        "/breakdown/all/pageview/2013/1/1/1/1",
    ] {
        let reply = app.get(bad).await;
        assert!(
            reply.status == StatusCode::UNPROCESSABLE_ENTITY
                || reply.status == StatusCode::NOT_FOUND,
            "{bad}: {}",
            reply.status
        );
        assert!(!reply.detail().is_empty());
    }
    assert_eq!(
        app.get("/breakdown/all/pageview/2013/2/29").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn top_domains_rank_sites_over_the_trailing_period_and_count_clicks() {
    let app = TestApp::new();
    for (url, n) in [
        ("https://a.com/x", 3),
        ("https://www.b.org/", 5),
        ("https://c.net/", 1),
    ] {
        for i in 0..n {
            assert_eq!(
                app.visit(url, &format!("10.1.0.{i}"), "UA").await.status,
                StatusCode::OK
            );
        }
    }
    let now = chrono::Utc::now().timestamp();
    // Old visits count in `day` only, not in `min`.
    let two_hours_ago = footfall::domain::format_space((now - 7200) * 1000);
    import(
        &app,
        &[("https://c.net/", two_hours_ago.as_str(), "pageview"); 6],
    )
    .await;
    let min = app.get("/domains/min").await.json();
    assert_eq!(
        min,
        json!({"domains": {"b.org": 5, "a.com": 3, "c.net": 1}})
    );
    let order: Vec<&String> = min["domains"].as_object().unwrap().keys().collect();
    assert_eq!(order, ["b.org", "a.com", "c.net"], "highest first");
    let day = app.get("/domains/day").await.json();
    assert_eq!(day["domains"]["c.net"], 7);
    assert_eq!(
        app.get("/domains/day?limit=1").await.json(),
        json!({"domains": {"c.net": 7}})
    );

    // Pre-counted clicks: counted here and in breakdowns, not in per-visit analytics.
    let reply = app
        .post_json(
            "/domains",
            &json!({"timestamp": now, "example3": 144, "a.com": 10}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let hour = app.get("/domains/hour").await.json();
    let order: Vec<(&String, i64)> = hour["domains"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k, v.as_i64().unwrap()))
        .collect();
    assert_eq!(order[0], (&"example3".to_owned(), 144));
    assert_eq!(order[1], (&"a.com".to_owned(), 13));
    assert_eq!(app.get("/stats").await.json()["total_visits"], 15);
    let year = chrono::Utc::now().format("%Y").to_string();
    let b = app
        .get(&format!("/breakdown/example3/pageview/{year}"))
        .await
        .json();
    assert_eq!(data(&b).iter().map(|d| d.1).sum::<i64>(), 144);
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn domain_periods_limits_and_bodies_are_validated() {
    let app = TestApp::new();
    for bad in [
        "/domains/week",
        "/domains/min?limit=0",
        "/domains/min?limit=1001",
        "/domains/min?limit=x",
    ] {
        let reply = app.get(bad).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(
        app.get("/domains/min?limit=1000").await.status,
        StatusCode::OK
    );
    for bad in [
        json!({"example.com": 5}),
        json!({"timestamp": "yesterday", "a.com": 1}),
        // Before 1970 by less than a millisecond (found by schemathesis): still before 1970.
        json!({"timestamp": -2.2250738585e-313, "a.com": 1}),
        json!({"timestamp": 8796093022.5, "a.com": 1}),
        json!({"timestamp": 1644407344, "a.com": -1}),
        json!({"timestamp": 1644407344, "a.com": "many"}),
        json!({"timestamp": 1644407344, "bad/site": 1}),
        json!([1, 2]),
    ] {
        let reply = app.post_json("/domains", &bad).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert!(app.rollup_mismatches().await.is_empty());
}

/// Fires `n` concurrent requests from distinct client IPs (via the trusted loopback proxy);
/// returns how many were answered 2xx.
async fn concurrent(
    n: usize,
    make: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder,
) -> usize {
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..n)
        .map(|i| {
            make(&client, i)
                .header(
                    "x-forwarded-for",
                    format!("172.16.{}.{}", i / 250, i % 250 + 1),
                )
                .send()
        })
        .collect();
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status().is_success()))
        .count()
}

async fn counts(base: &str) -> (i64, i64) {
    let counter: Value = reqwest::get(format!("{base}/visits/hot"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stats: Value = reqwest::get(format!("{base}/stats/https%3A%2F%2Fhot.example%2Fpage"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        counter["count"].as_i64().unwrap(),
        stats["total_visits"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_count_exactly_across_restarts_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let mut expected = (0i64, 0i64);
    for round in 0..3 {
        let mut server = ServerProcess::start(&db, &[]);
        assert_eq!(
            counts(&server.base).await,
            expected,
            "after restart {round}"
        );
        let base = server.base.clone();
        let (page_ok, url_ok) = tokio::join!(
            concurrent(1000, |c, _| c.post(format!("{base}/visit/hot"))),
            concurrent(1000, |c, _| c
                .post(format!("{base}/visit"))
                .json(&json!({"url": "https://hot.example/page"}))),
        );
        assert!(page_ok > 0 && url_ok > 0);
        expected.0 += page_ok as i64;
        expected.1 += url_ok as i64;
        assert_eq!(counts(&server.base).await, expected, "round {round}");
        if round % 2 == 0 {
            server.kill_hard();
        } else {
            assert_eq!(server.terminate().code(), Some(0));
        }
    }
    let server = ServerProcess::start(&db, &[]);
    assert_eq!(
        counts(&server.base).await,
        expected,
        "after the last restart"
    );
}

// SQLite-only: `page_counters_count_exactly_and_say_where_the_answer_came_from` (it checks the SQLite cache and its "sqlite" answers; tests/api/scale_out.rs checks the PostgreSQL counters).
crate::on_postgres!(
    page_ids_are_validated,
    breakdowns_list_every_segment_of_the_period_with_zeros,
    impossible_dates_and_bad_names_are_422,
    top_domains_rank_sites_over_the_trailing_period_and_count_clicks,
    domain_periods_limits_and_bodies_are_validated,
    concurrent_requests_count_exactly_across_restarts_and_kill_9,
);
