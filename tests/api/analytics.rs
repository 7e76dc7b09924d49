//! API.md §2–§4: analytics equal a brute-force count of the generated visits; export filters,
//! formats and round trip; cleanup; admin rules; the CLI commands.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::common::{TestApp, footfall_cli};

/// A generated visit, the ground truth the answers are checked against.
#[derive(Debug, Clone)]
struct Truth {
    url: String,
    ip: String,
    ua: String,
    ts: i64, // unix seconds
}

fn iso(ts: i64) -> String {
    footfall::domain::format_iso(ts * 1000)
}

fn space(ts: i64) -> String {
    footfall::domain::format_space(ts * 1000)
}

fn hour_key(ts: i64) -> String {
    space(ts - ts.rem_euclid(3600))
}

fn encode(url: &str) -> String {
    url.bytes().map(|b| format!("%{b:02X}")).collect()
}

const WINDOWS: &[i64] = &[1, 5, 24, 720];

/// Random visits over the last 40 days, distinct seconds (so "newest" is unambiguous), none
/// within 30 s of a window boundary (the server's clock runs a little after ours).
fn generate(seed: u64, n: usize, now: i64) -> Vec<Truth> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pages = [
        "https://a.com/",
        "https://a.com/page?id=1",
        "https://www.b.org/x",
        "http://c.net:8080/deep/path",
        "https://d.io/%C3%A9t%C3%A9",
    ];
    let mut used = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let ago = if rng.random_bool(0.5) {
            rng.random_range(10..6 * 3600)
        } else {
            rng.random_range(10..40 * 86_400)
        };
        let ts = now - ago;
        if WINDOWS.iter().any(|h| (ts - (now - h * 3600)).abs() < 30) || !used.insert(ts) {
            continue;
        }
        out.push(Truth {
            url: pages[rng.random_range(0..pages.len())].to_owned(),
            ip: format!("10.0.0.{}", rng.random_range(1..12)),
            ua: format!("Agent/{}", rng.random_range(0..4)),
            ts,
        });
    }
    out
}

fn jsonl(visits: &[Truth]) -> String {
    visits
        .iter()
        .map(|v| {
            format!(
                "{}\n",
                json!({"url": v.url, "ip": v.ip, "user_agent": v.ua, "timestamp": space(v.ts)})
            )
        })
        .collect()
}

fn expected_page(visits: &[&Truth], now: i64, hours: i64, recent: usize) -> Value {
    let start = now - hours * 3600;
    let in_window: Vec<&&Truth> = visits.iter().filter(|v| v.ts >= start).collect();
    let mut by_hour: BTreeMap<String, i64> = BTreeMap::new();
    let mut agents: HashMap<String, i64> = HashMap::new();
    for v in &in_window {
        *by_hour.entry(hour_key(v.ts)).or_default() += 1;
        *agents.entry(v.ua.clone()).or_default() += 1;
    }
    let mut newest: Vec<&&&Truth> = in_window.iter().collect();
    newest.sort_by_key(|v| -v.ts);
    json!({
        "total_visits": visits.len(),
        "unique_ips": visits.iter().map(|v| &v.ip).collect::<HashSet<_>>().len(),
        "by_hour": by_hour,
        "user_agents": agents,
        "recent_visits": newest.iter().take(recent)
            .map(|v| json!({"ip": v.ip, "user_agent": v.ua, "timestamp": iso(v.ts)}))
            .collect::<Vec<_>>(),
    })
}

/// Checks `/summary`, `/stats/{url}` and `/stats` against the truth.
async fn check_analytics(app: &TestApp, truth: &[Truth], now: i64) {
    let mut by_url: BTreeMap<&str, Vec<&Truth>> = BTreeMap::new();
    for v in truth {
        by_url.entry(&v.url).or_default().push(v);
    }
    for &hours in WINDOWS {
        let reply = app.get(&format!("/summary?hours={hours}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.json();
        let data = body["data"].as_object().unwrap();
        assert_eq!(data.len(), by_url.len(), "pages in /summary");
        for (url, visits) in &by_url {
            let want = expected_page(visits, now, hours, 10);
            assert_eq!(data[*url], want, "/summary?hours={hours} for {url}");
            let stats = app
                .get(&format!("/stats/{}?hours={hours}", encode(url)))
                .await
                .json();
            let want = expected_page(visits, now, hours, 20);
            assert_eq!(stats["url"], *url);
            assert_eq!(stats["total_visits"], want["total_visits"]);
            assert_eq!(stats["unique_ips"], want["unique_ips"]);
            assert_eq!(
                stats["hourly_visits"], want["by_hour"],
                "/stats hourly {url} {hours}h"
            );
            assert_eq!(stats["recent_visits"], want["recent_visits"]);
        }
        assert_eq!(body["total_entries"], truth.len());
        let range = &body["date_range"];
        if truth.is_empty() {
            assert!(range.is_null());
        } else {
            assert_eq!(
                range["earliest"],
                iso(truth.iter().map(|v| v.ts).min().unwrap())
            );
            assert_eq!(
                range["latest"],
                iso(truth.iter().map(|v| v.ts).max().unwrap())
            );
        }
    }
    let site = app.get("/stats").await.json();
    assert_eq!(site["total_visits"], truth.len());
    assert_eq!(
        site["unique_visitors"],
        truth.iter().map(|v| &v.ip).collect::<HashSet<_>>().len()
    );
    let mut popular: Vec<(&str, usize)> = by_url.iter().map(|(u, v)| (*u, v.len())).collect();
    popular.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let got: Vec<(String, i64)> = site["popular_pages"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect();
    let want: Vec<(String, i64)> = popular
        .iter()
        .map(|(u, n)| (u.to_string(), *n as i64))
        .collect();
    assert_eq!(got, want, "popular_pages, in order");
    let mut newest: Vec<&Truth> = truth.iter().collect();
    newest.sort_by_key(|v| -v.ts);
    let want: Vec<Value> = newest
        .iter()
        .take(10)
        .map(|v| json!({"url": v.url, "ip": v.ip, "timestamp": iso(v.ts)}))
        .collect();
    assert_eq!(site["recent_visits"], Value::Array(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_equal_a_brute_force_count_before_and_after_cleanup() {
    for seed in 1..=3 {
        let app = TestApp::new();
        let now = chrono::Utc::now().timestamp();
        let mut truth = generate(seed, 400, now);
        if seed == 1 {
            // The CLI rolls each batch up in its own transaction.
            let report = app.import_jsonl(&jsonl(&truth)).await;
            assert_eq!((report.imported, report.skipped), (400, 0));
        } else {
            // Over HTTP the visits are answered once committed; those above the watermark are
            // still in the tail, which answers must count.
            let reply = app
                .post_raw("/import", "application/x-ndjson", jsonl(&truth))
                .await;
            assert_eq!(reply.json()["imported"], 400);
            check_analytics(&app, &truth, now).await;
            // ...and after the roll-up thread rolled the tail up while idle.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        check_analytics(&app, &truth, now).await;

        let reply = app.delete("/cleanup?days=7").await;
        assert_eq!(reply.status, StatusCode::OK);
        let body = reply.json();
        let cutoff = now - 7 * 86_400;
        let before = truth.len();
        truth.retain(|v| v.ts >= cutoff);
        assert_eq!(body["status"], "completed");
        assert_eq!(body["deleted_visits"], before - truth.len());
        assert!(app.rollup_mismatches().await.is_empty());
        check_analytics(&app, &truth, now).await;
    }
}

#[tokio::test]
async fn an_empty_database_answers_zeros_and_nulls() {
    let app = TestApp::new();
    let body = app.get("/summary").await.json();
    assert_eq!(
        body,
        json!({"data": {}, "total_entries": 0, "date_range": null})
    );
    let body = app.get("/stats").await.json();
    assert_eq!(
        body,
        json!({"total_visits": 0, "unique_visitors": 0, "popular_pages": {}, "recent_visits": []})
    );
    let body = app.get("/stats/https://nowhere.example/page").await.json();
    assert_eq!(
        body,
        json!({"url": "https://nowhere.example/page", "total_visits": 0, "unique_ips": 0,
               "hourly_visits": {}, "recent_visits": []})
    );
    let reply = app.get("/all-visits").await;
    assert_eq!(reply.json(), json!({"visits": [], "total_count": "0"}));
}

#[tokio::test]
async fn stats_url_accepts_raw_encoded_query_string_and_collapsed_forms() {
    let app = TestApp::new();
    for url in ["https://a.com/page", "https://a.com/page?id=7&x=y"] {
        assert_eq!(app.visit(url, "1.1.1.1", "UA").await.status, StatusCode::OK);
    }
    let count = |body: Value| body["total_visits"].as_i64().unwrap();
    assert_eq!(count(app.get("/stats/https://a.com/page").await.json()), 1);
    assert_eq!(count(app.get("/stats/https:/a.com/page").await.json()), 1);
    assert_eq!(
        count(app.get("/stats/https%3A%2F%2Fa.com%2Fpage").await.json()),
        1
    );
    let q = app
        .get(&format!("/stats/{}", encode("https://a.com/page?id=7&x=y")))
        .await
        .json();
    assert_eq!(q["url"], "https://a.com/page?id=7&x=y");
    assert_eq!(count(q), 1);
    // A raw URL's own query string cannot be told from ours: hours still applies.
    assert_eq!(
        count(app.get("/stats/https://a.com/page?hours=2").await.json()),
        1
    );
    let reply = app.get("/stats/not-a-url").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.detail(), "Invalid URL format");
}

#[tokio::test]
async fn hours_and_limit_are_validated() {
    let app = TestApp::new();
    for ok in [
        "/summary?hours=1",
        "/summary?hours=8760",
        "/summary?limit=1",
        "/stats/https://a.com/?hours=8760",
    ] {
        assert_eq!(app.get(ok).await.status, StatusCode::OK, "{ok}");
    }
    for bad in [
        "/summary?hours=0",
        "/summary?hours=8761",
        "/summary?hours=1000000000",
        "/summary?hours=abc",
        "/summary?hours=-3",
        "/summary?limit=0",
        "/stats/https://a.com/?hours=0",
        "/stats/https://a.com/?hours=99999999999999999999",
    ] {
        let reply = app.get(bad).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(!reply.detail().is_empty());
    }
}

#[tokio::test]
async fn summary_limit_keeps_the_most_visited_pages() {
    let app = TestApp::new();
    for (url, n) in [
        ("https://a.com/1", 3),
        ("https://a.com/2", 1),
        ("https://a.com/3", 2),
    ] {
        for i in 0..n {
            app.visit(url, &format!("1.1.1.{i}"), "UA").await;
        }
    }
    let body = app.get("/summary?limit=2").await.json();
    let urls: Vec<&String> = body["data"].as_object().unwrap().keys().collect();
    assert_eq!(urls, ["https://a.com/1", "https://a.com/3"]);
    assert_eq!(body["total_entries"], 6);
}

/// With a `limit`, only the listed pages' rows are read: each listed page must still get
/// exactly what the full summary gives it, from the tail and from the rollups alike.
#[tokio::test]
async fn a_limited_summary_gives_each_page_what_the_full_one_gives() {
    let app = TestApp::new();
    let now = chrono::Utc::now().timestamp();
    let truth = generate(4, 400, now);
    let reply = app
        .post_raw("/import", "application/x-ndjson", jsonl(&truth))
        .await;
    assert_eq!(reply.json()["imported"], 400);
    // First with the visits in the tail, then once the roll-up has counted them.
    for rolled_up in [false, true] {
        if rolled_up {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        for hours in [1, 24, 720] {
            let full = app.get(&format!("/summary?hours={hours}")).await.json();
            let full = full["data"].as_object().unwrap();
            for limit in [1, 3, 10] {
                let body = app
                    .get(&format!("/summary?hours={hours}&limit={limit}"))
                    .await
                    .json();
                let listed = body["data"].as_object().unwrap();
                assert_eq!(
                    listed.len(),
                    limit.min(full.len()),
                    "{hours} h, top {limit}"
                );
                let least = listed
                    .values()
                    .map(|p| p["total_visits"].as_i64().unwrap())
                    .min()
                    .unwrap();
                for (url, page) in listed {
                    assert_eq!(page, &full[url], "{url}, {hours} h, top {limit}");
                }
                // No page left out has more visits than one listed.
                for (url, page) in full.iter().filter(|(url, _)| !listed.contains_key(*url)) {
                    assert!(page["total_visits"].as_i64().unwrap() <= least, "{url}");
                }
            }
        }
    }
}

/// Exported visits as (url, timestamp) pairs, from any format.
async fn export(app: &TestApp, query: &str) -> (StatusCode, String, String) {
    let reply = app.get(&format!("/all-visits{query}")).await;
    let ct = reply
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (reply.status, ct, reply.text())
}

/// Which visits a filter keeps.
type Keep = Box<dyn Fn(&Truth) -> bool>;

#[tokio::test]
async fn export_filters_match_the_truth_in_every_format() {
    let app = TestApp::new();
    let now = chrono::Utc::now().timestamp();
    let truth = generate(7, 300, now);
    app.import_jsonl(&jsonl(&truth)).await;
    let mut newest: Vec<&Truth> = truth.iter().collect();
    newest.sort_by_key(|v| -v.ts);
    let day = |ago_days: i64| space(now - ago_days * 86_400)[..10].to_owned();
    let day_start = |d: &str| footfall::domain::parse_timestamp(d).unwrap() / 1000;
    let (d10, d3) = (day(10), day(3));
    let since = space(now - 5 * 86_400);
    let cases: Vec<(String, Keep)> = vec![
        (String::new(), Box::new(|_| true)),
        (
            format!("start_date={d10}"),
            Box::new({
                let s = day_start(&d10);
                move |v| v.ts >= s
            }),
        ),
        (
            format!("end_date={d3}"),
            Box::new({
                let e = day_start(&d3) + 86_400;
                move |v| v.ts < e
            }),
        ),
        (
            format!("start_date={d10}&end_date={d3}"),
            Box::new({
                let (s, e) = (day_start(&d10), day_start(&d3) + 86_400);
                move |v| v.ts >= s && v.ts < e
            }),
        ),
        (
            format!("since={}", since.replace(' ', "%20")),
            Box::new({
                let s = now - 5 * 86_400;
                move |v| v.ts > s
            }),
        ),
        (
            format!("range={d10},{d3}&start_date=2000-01-01"),
            Box::new({
                let (s, e) = (day_start(&d10), day_start(&d3));
                move |v| v.ts >= s && v.ts < e
            }),
        ),
    ];
    for (query, keep) in &cases {
        let want: Vec<&&Truth> = newest.iter().filter(|v| keep(v)).collect();
        for (limit, offset) in [
            (None, None),
            (Some(5), None),
            (Some(7), Some(3)),
            (None, Some(4)),
        ] {
            let mut q = query.clone();
            if let Some(l) = limit {
                q.push_str(&format!("&limit={l}"));
            }
            if let Some(o) = offset {
                q.push_str(&format!("&offset={o}"));
            }
            let page: Vec<&&&Truth> = want
                .iter()
                .skip(offset.unwrap_or(0))
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            let rows: Vec<Value> = page
                .iter()
                .map(|v| json!({"url": v.url, "ip": v.ip, "user_agent": v.ua, "timestamp": space(v.ts)}))
                .collect();

            let (status, ct, body) = export(&app, &format!("?{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            assert_eq!(ct, "application/json");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["visits"], Value::Array(rows.clone()), "json ?{q}");
            assert_eq!(body["total_count"], rows.len().to_string());

            let (_, ct, body) = export(&app, &format!("?{q}&format=jsonl")).await;
            assert_eq!(ct, "application/x-ndjson");
            let lines: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines, rows, "jsonl ?{q}");

            let (_, ct, body) = export(&app, &format!("?{q}&format=csv")).await;
            assert!(ct.starts_with("text/csv"));
            let mut reader = csv::Reader::from_reader(body.as_bytes());
            assert_eq!(
                reader.headers().unwrap(),
                vec!["url", "ip", "user_agent", "timestamp"]
            );
            let csv_rows: Vec<Value> = reader
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    json!({"url": &r[0], "ip": &r[1], "user_agent": &r[2], "timestamp": &r[3]})
                })
                .collect();
            assert_eq!(csv_rows, rows, "csv ?{q}");
        }
    }
}

#[tokio::test]
async fn malformed_export_filters_are_422_never_ignored() {
    let app = TestApp::new();
    for bad in [
        "range=2025-01-01",
        "range=bad,2025-01-01",
        "range=2025-01-01,2025-02-30",
        "start_date=2025-13-01",
        "end_date=yesterday",
        "since=not-a-time",
        "limit=-1",
        "offset=-1",
        "limit=abc",
        "format=xml",
    ] {
        let reply = app.get(&format!("/all-visits?{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            reply.text()
        );
        assert!(!reply.detail().is_empty());
    }
}

#[tokio::test]
async fn an_export_imports_back_into_an_empty_server_identically() {
    let source = TestApp::new();
    let now = chrono::Utc::now().timestamp();
    source.import_jsonl(&jsonl(&generate(11, 250, now))).await;
    // Some visits with events and awkward strings too.
    for (url, ua) in [
        ("https://e.com/\"quoted\"", "UA, with \"commas\""),
        ("https://e.com/ü", "Ünï"),
    ] {
        source.visit(url, "2001:db8::7", ua).await;
    }
    source
        .post_json(
            "/visit",
            &json!({"url": "https://e.com/buy", "event": "order"}),
        )
        .await;
    let (_, _, first) = export(&source, "?format=jsonl").await;
    let target = TestApp::new();
    let reply = target
        .post_raw("/import", "application/x-ndjson", first.clone())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"imported": 253, "skipped": 0, "errors": []})
    );
    let (_, _, second) = export(&target, "?format=jsonl").await;
    assert_eq!(first, second);
    let year = chrono::Utc::now().format("%Y").to_string();
    let breakdown = target
        .get(&format!("/breakdown/all/order/{year}"))
        .await
        .json();
    let orders: i64 = breakdown["data"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(orders, 1, "the event survives the round trip");
}

#[tokio::test]
async fn import_reports_bad_records_by_line_and_imports_the_rest() {
    let app = TestApp::new();
    let body = concat!(
        r#"{"url":"https://a.com/","ip":"1.2.3.4","user_agent":"UA","timestamp":"2025-07-28 10:30:00"}"#,
        "\n",
        r#"{"url":"https://a.com/","ip":"999.1.1.1","timestamp":"2025-07-28 10:30:00"}"#,
        "\n",
        r#"{"url":"https://a.com/","ip_address":"1.2.3.5","timestamp":"2025-07-28T10:31:00Z"}"#,
        "\n",
        "garbage\n",
        r#"{"url":"https://a.com/","ip":"1.2.3.4","timestamp":"2025-02-30 10:00:00"}"#,
        "\n",
    );
    let reply = app.post_raw("/import", "application/x-ndjson", body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let report = reply.json();
    assert_eq!(report["imported"], 2);
    assert_eq!(report["skipped"], 3);
    let lines: Vec<i64> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 4, 5]);
    let reply = app
        .post_raw("/import", "application/json", "[{\"url\": 1}, ")
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.stored_visits().await, 2);
}

#[tokio::test]
async fn cleanup_validates_days_and_defaults_to_30() {
    let app = TestApp::new();
    let now = chrono::Utc::now().timestamp();
    app.import_jsonl(&jsonl(&[
        Truth {
            url: "https://a.com/".into(),
            ip: "1.1.1.1".into(),
            ua: "U".into(),
            ts: now - 40 * 86_400,
        },
        Truth {
            url: "https://a.com/".into(),
            ip: "1.1.1.2".into(),
            ua: "U".into(),
            ts: now - 20 * 86_400,
        },
    ]))
    .await;
    for bad in ["/cleanup?days=0", "/cleanup?days=-4"] {
        let reply = app.delete(bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.detail(), "Days must be at least 1");
    }
    assert_eq!(
        app.delete("/cleanup?days=abc").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let body = app.delete("/cleanup").await.json();
    assert_eq!(body["deleted_visits"], 1);
    let cutoff =
        footfall::domain::parse_timestamp(body["cutoff_date"].as_str().unwrap()).unwrap() / 1000;
    assert!((cutoff - (now - 30 * 86_400)).abs() <= 5);
    assert_eq!(app.get("/stats").await.json()["unique_visitors"], 1);
}

async fn admin_status(
    app: &TestApp,
    peer: &str,
    headers: &[(&str, &str)],
    uri: &str,
) -> StatusCode {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    app.send_from(peer.parse().unwrap(), request.body(Body::empty()).unwrap())
        .await
        .status
}

#[tokio::test]
async fn admin_endpoints_need_the_token_when_one_is_set() {
    let app = TestApp::with(|a| a.admin_token = Some("s3cret".into()));
    for uri in ["/all-visits", "/all-visits?format=csv"] {
        assert_eq!(
            admin_status(&app, "127.0.0.1", &[], uri).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            admin_status(&app, "127.0.0.1", &[("authorization", "Bearer wrong")], uri).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            admin_status(
                &app,
                "203.0.113.9",
                &[("authorization", "Bearer s3cret")],
                uri
            )
            .await,
            StatusCode::OK
        );
    }
    let reply = app.delete("/cleanup?days=3").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.detail().contains("token"));
    let reply = app.post_raw("/import", "application/x-ndjson", "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_admin_endpoints_answer_loopback_clients_only() {
    let app = TestApp::new();
    assert_eq!(
        admin_status(&app, "127.0.0.1", &[], "/all-visits").await,
        StatusCode::OK
    );
    assert_eq!(
        admin_status(&app, "::1", &[], "/all-visits").await,
        StatusCode::OK
    );
    let reply = app
        .send_from(
            "203.0.113.9".parse().unwrap(),
            Request::get("/all-visits").body(Body::empty()).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(!reply.detail().is_empty());
    // A trusted proxy forwarding a remote client: the client is not local.
    assert_eq!(
        admin_status(
            &app,
            "127.0.0.1",
            &[("x-forwarded-for", "198.51.100.4")],
            "/all-visits"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // An untrusted peer cannot claim to be local.
    assert_eq!(
        admin_status(
            &app,
            "203.0.113.9",
            &[("x-forwarded-for", "127.0.0.1")],
            "/all-visits"
        )
        .await,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn the_admin_token_never_shows_in_debug_output() {
    let mut args = footfall::config::ServeArgs::for_db("x.db");
    args.admin_token = Some("s3cret-token".into());
    let shown = format!("{args:?}");
    assert!(!shown.contains("s3cret-token"));
    assert!(shown.contains("redacted"));
}

#[tokio::test]
async fn cli_export_and_cleanup_work_beside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let now = chrono::Utc::now().timestamp();
    let truth = generate(5, 50, now);
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, jsonl(&truth)).unwrap();
    let out = footfall_cli(&["import", file.to_str().unwrap()], &db);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 50 visits, skipped 0"));
    let out = footfall_cli(&["export", "--format", "csv", "--limit", "3"], &db);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    let out = footfall_cli(&["cleanup", "--days", "7"], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = truth.iter().filter(|v| v.ts >= now - 7 * 86_400).count() as i64;
    assert_eq!(report["deleted_visits"].as_i64().unwrap(), 50 - kept);
    assert_eq!(crate::common::stored_visits(&db).await, kept);
    let out = footfall_cli(&["cleanup", "--days", "0"], &db);
    assert!(!out.status.success());
}

#[tokio::test]
async fn since_the_last_representable_instant_exports_nothing() {
    let app = TestApp::new();
    app.visit("https://a.com/", "1.1.1.1", "UA").await;
    // 2^43 - 1 ms, the last instant a visit id can hold: nothing is after it.
    let reply = app.get("/all-visits?since=8796093022.207").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json(), json!({"visits": [], "total_count": "0"}));
    let reply = app.get("/all-visits?since=2000-01-01").await;
    assert_eq!(reply.json()["total_count"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cleanup_beside_a_running_server_shows_in_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("v.db");
    let now = chrono::Utc::now().timestamp();
    let truth = generate(9, 200, now);
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, jsonl(&truth)).unwrap();
    let server = crate::common::ServerProcess::start(&db, &[]);
    let stats = || async {
        reqwest::get(format!("{}/stats", server.base))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let out = footfall_cli(&["import", file.to_str().unwrap()], &db);
    assert!(out.status.success());
    assert_eq!(stats().await["total_visits"], 200);
    let out = footfall_cli(&["cleanup", "--days", "7"], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = truth.iter().filter(|v| v.ts >= now - 7 * 86_400).count();
    assert_eq!(stats().await["total_visits"], kept);
    // The server keeps recording on the same file afterwards.
    let reply = reqwest::Client::new()
        .post(format!("{}/visit", server.base))
        .json(&json!({"url": "https://after.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(stats().await["total_visits"], kept + 1);
}

crate::on_postgres!(
    analytics_equal_a_brute_force_count_before_and_after_cleanup,
    an_empty_database_answers_zeros_and_nulls,
    stats_url_accepts_raw_encoded_query_string_and_collapsed_forms,
    hours_and_limit_are_validated,
    summary_limit_keeps_the_most_visited_pages,
    a_limited_summary_gives_each_page_what_the_full_one_gives,
    export_filters_match_the_truth_in_every_format,
    malformed_export_filters_are_422_never_ignored,
    an_export_imports_back_into_an_empty_server_identically,
    import_reports_bad_records_by_line_and_imports_the_rest,
    cleanup_validates_days_and_defaults_to_30,
    admin_endpoints_need_the_token_when_one_is_set,
    without_a_token_admin_endpoints_answer_loopback_clients_only,
    the_admin_token_never_shows_in_debug_output,
    cli_export_and_cleanup_work_beside_the_data,
    since_the_last_representable_instant_exports_nothing,
    cli_cleanup_beside_a_running_server_shows_in_its_answers,
);
