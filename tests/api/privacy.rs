//! API.md §12, the privacy controls: `--ip-mode truncated|hashed` (no address kept anywhere:
//! not in a table, an export, an answer's figures or a log line), `--ignore-ips`,
//! `--respect-dnt`, `--bots exclude`, `--retention-days` and `--analytics-token`.

use std::collections::HashSet;
use std::fs::File;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use footfall::privacy::{BotPolicy, IpMode, parse_net};
use serde_json::{Value, json};

use crate::common::{ServerProcess, TestApp, footfall_cli, metric, stored_visits};

crate::on_postgres!(
    hashed_mode_stores_pseudonyms_and_counts_them,
    truncated_mode_keeps_the_network_only,
    ignored_visits_are_answered_and_stored_nowhere,
    the_analytics_token_guards_every_read,
    retention_deletes_old_visits_by_itself,
    hashed_mode_leaves_no_address_in_the_files_or_the_log,
    cli_import_applies_the_ip_mode,
);

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn visit_from(url: &str, ip: &str, ua: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::post("/visit")
        .header("content-type", "application/json")
        .header("x-forwarded-for", ip)
        .header("user-agent", ua);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(json!({ "url": url }).to_string()))
        .unwrap()
}

async fn export_ips(app: &TestApp) -> Vec<String> {
    let reply = app.get("/all-visits?format=jsonl").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["ip"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn hashed_mode_stores_pseudonyms_and_counts_them() {
    let app = TestApp::with(|a| a.privacy.ip_mode = IpMode::Hashed);
    let sends = [
        ("https://a.com/", "203.0.113.9", FIREFOX),
        ("https://a.com/x", "203.0.113.9", FIREFOX), // same visitor, same site
        ("https://a.com/", "203.0.113.9", CHROME),   // another user agent: another pseudonym
        ("https://b.com/", "203.0.113.9", FIREFOX),  // another site: another pseudonym
        ("https://a.com/", "198.51.100.1", FIREFOX),
    ];
    let mut answered = Vec::new();
    for (url, ip, ua) in sends {
        let reply = app.send(visit_from(url, ip, ua, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["status"], "recorded");
        let shown = body["ip"].as_str().unwrap().to_owned();
        assert!(shown.starts_with("h:") && shown.len() == 18, "{shown}");
        answered.push(shown);
    }
    assert_eq!(
        answered[0], answered[1],
        "one visitor on one site is one pseudonym"
    );
    let distinct: HashSet<_> = answered.iter().collect();
    assert_eq!(distinct.len(), 4, "{answered:?}");
    let exported = export_ips(&app).await;
    assert_eq!(exported.len(), 5);
    assert!(
        exported.iter().all(|ip| ip.starts_with("h:")),
        "{exported:?}"
    );
    let stats = app.get("/stats").await.json();
    assert_eq!(stats["unique_visitors"], 4, "{stats}");
    assert!(!stats.to_string().contains("203.0.113.9"), "{stats}");
    let a = app.get("/hourly?site=a.com").await.json();
    assert_eq!(
        (a["total_visits"].as_i64(), a["unique_ips"].as_i64()),
        (Some(4), Some(3)),
        "{a}"
    );
    let summary = app.get("/summary").await.text();
    assert!(
        !summary.contains("203.0.113") && !summary.contains("198.51.100"),
        "{summary}"
    );
    // An export of pseudonyms imports back as pseudonyms.
    let jsonl = app.get("/all-visits?format=jsonl").await.text();
    let other = TestApp::new();
    let report = other.import_jsonl(&jsonl).await;
    assert_eq!(report.imported, 5, "{:?}", report.errors);
    let mut again = export_ips(&other).await;
    let mut before = exported;
    again.sort();
    before.sort();
    assert_eq!(again, before);
    assert_eq!(app.rollup_mismatches().await, Vec::<String>::new());
}

#[tokio::test]
async fn truncated_mode_keeps_the_network_only() {
    let app = TestApp::with(|a| a.privacy.ip_mode = IpMode::Truncated);
    for ip in ["203.0.113.9", "203.0.113.200", "2001:db8:abcd:12::1"] {
        let reply = app
            .send(visit_from("https://a.com/", ip, FIREFOX, &[]))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let mut ips = export_ips(&app).await;
    ips.sort();
    assert_eq!(ips, ["2001:db8:abcd::", "203.0.113.0", "203.0.113.0"]);
    assert_eq!(app.get("/stats").await.json()["unique_visitors"], 2);
    // POST /import applies the mode too.
    let jsonl = r#"{"url":"https://a.com/i","ip":"192.0.2.77","timestamp":"2024-01-01 00:00:00"}"#;
    let reply = app.post_raw("/import", "application/x-ndjson", jsonl).await;
    assert_eq!(reply.json()["imported"], 1, "{}", reply.text());
    assert!(export_ips(&app).await.contains(&"192.0.2.0".to_owned()));
}

#[tokio::test]
async fn ignored_visits_are_answered_and_stored_nowhere() {
    let app = TestApp::with(|a| {
        a.privacy.ignore_ips = vec![
            parse_net("10.1.0.0/16").unwrap(),
            parse_net("10.2.3.4").unwrap(),
        ];
        a.privacy.respect_dnt = true;
        a.privacy.bots = BotPolicy::Exclude;
    });
    let before = app.get("/metrics").await.text();
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let cases: [(&str, &str, Headers); 5] = [
        ("10.1.9.9", FIREFOX, &[]),
        ("10.2.3.4", FIREFOX, &[]),
        ("10.5.0.1", FIREFOX, &[("dnt", "1")]),
        ("10.5.0.1", FIREFOX, &[("sec-gpc", "1")]),
        ("10.5.0.1", bot, &[]),
    ];
    for (ip, ua, headers) in cases {
        let reply = app
            .send(visit_from("https://a.com/", ip, ua, headers))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["status"], "ignored", "{ip} {headers:?}: {body}");
        for key in ["url", "ip", "user_agent", "timestamp"] {
            assert!(body.get(key).is_some(), "{body}");
        }
    }
    let bulk = Request::post("/bulk-visits")
        .header("content-type", "application/json")
        .header("dnt", "1")
        .body(Body::from(
            json!([{"url": "https://a.com/1"}, {"url": "https://a.com/2"}]).to_string(),
        ))
        .unwrap();
    let reply = app.send(bulk).await;
    assert_eq!(reply.json()["status"], "ignored", "{}", reply.text());
    assert_eq!(reply.json()["visits_recorded"], 0);
    let legacy = Request::get("/?url=https://a.com/l")
        .header("user-agent", bot)
        .body(Body::empty())
        .unwrap();
    let reply = app.send(legacy).await;
    assert_eq!(reply.json()["status"], "ignored", "{}", reply.text());
    assert_eq!(reply.json()["visits"], "0");
    assert_eq!(app.stored_visits().await, 0);
    // DNT: 0 and other clients are recorded.
    let reply = app
        .send(visit_from(
            "https://a.com/",
            "10.5.0.1",
            FIREFOX,
            &[("dnt", "0")],
        ))
        .await;
    assert_eq!(reply.json()["status"], "recorded");
    assert_eq!(app.stored_visits().await, 1);
    let after = app.get("/metrics").await.text();
    let delta = |reason| {
        let want = [("reason", reason)];
        metric(&after, "footfall_visits_ignored_total", &want)
            - metric(&before, "footfall_visits_ignored_total", &want)
    };
    assert!(
        delta("bot") >= 2.0 && delta("dnt") >= 4.0 && delta("ignored_ip") >= 2.0,
        "{after}"
    );
}

#[tokio::test]
async fn the_analytics_token_guards_every_read() {
    let app = TestApp::with(|a| {
        a.analytics_token = Some("reader-secret".into());
        a.admin_token = Some("admin-secret".into());
    });
    let reply = app
        .send(visit_from("https://a.com/", "10.0.0.1", FIREFOX, &[]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "recording needs no token");
    let reads = [
        "/summary",
        "/stats",
        "/stats/https%3A%2F%2Fa.com%2F",
        "/visits/home",
        "/breakdown/all/pageview/2025",
        "/breakdown/all/pageview/2025/7",
        "/breakdown/all/pageview/2025/7/28",
        "/breakdown/all/pageview/2025/7/28/10",
        "/domains/day",
        "/sources",
        "/devices",
        "/hourly",
    ];
    for path in reads {
        let get = |auth: Option<&str>| {
            let mut r = Request::get(path);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            r.body(Body::empty()).unwrap()
        };
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("reader-secret"),
            Some("Bearer "),
        ] {
            let reply = app.send(get(bad)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {bad:?}");
            assert!(reply.detail().contains("token"), "{path}");
        }
        for good in ["Bearer reader-secret", "Bearer admin-secret"] {
            let reply = app.send(get(Some(good))).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{path} {good}: {}",
                reply.text()
            );
        }
    }
    // Unset, the same reads are public.
    let public = TestApp::new();
    for path in reads {
        assert_eq!(public.get(path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn retention_deletes_old_visits_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let file = dir.path().join("old.jsonl");
    let now = footfall::domain::now_millis() / 1000;
    let lines: String = [40 * 86_400, 31 * 86_400, 29 * 86_400, 3600]
        .iter()
        .map(|ago| {
            format!(
                "{}\n",
                json!({"url": "https://a.com/", "ip": "10.0.0.1", "timestamp": now - ago})
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = footfall_cli(&["import", file.to_str().unwrap()], &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored_visits(&db).await, 4);
    let server = ServerProcess::start(&db, &["--retention-days", "30"]);
    crate::common::eventually(std::time::Duration::from_secs(20), "retention", || async {
        let body: Value = reqwest::get(format!("{}/hourly?hours=8760", server.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["total_visits"] == 2
    })
    .await;
    drop(server);
    assert_eq!(stored_visits(&db).await, 2);
}

#[tokio::test]
async fn hashed_mode_leaves_no_address_in_the_files_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let log = dir.path().join("server.log");
    // At debug: every request's line, the recording ones included, must be free of it too.
    let mut server = ServerProcess::start_logging(
        &db,
        &["--ip-mode", "hashed", "--log-format", "json"],
        File::create(&log).unwrap(),
        Some("debug"),
    );
    let client = reqwest::Client::new();
    for (i, path) in ["/visit", "/bulk-visits"].into_iter().enumerate() {
        let body = if i == 0 {
            json!({"url": "https://a.com/", "referrer": "https://b.com/"})
        } else {
            json!([{"url": "https://a.com/2"}])
        };
        let reply = client
            .post(format!("{}{path}", server.base))
            .header("x-forwarded-for", "203.0.113.9")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let pixel = client
        .get(format!(
            "{}/pixel.gif?url=https%3A%2F%2Fa.com%2F3",
            server.base
        ))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(pixel.status(), 200);
    let export = client
        .get(format!("{}/all-visits?format=csv", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), 4, "{export}");
    assert!(!export.contains("203.0.113"), "{export}");
    assert!(server.terminate().success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("203.0.113"), "{log}");
    // The database itself: no address as text or as its four bytes.
    if crate::common::on_postgres_now() {
        let url = crate::common::db_arg(&db);
        let (client, conn) = tokio_postgres::connect(url.to_str().unwrap(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for table in ["visits", "ips", "page_ips", "page_recent"] {
            let sql =
                format!("SELECT count(*) FILTER (WHERE length(ip) <> 8), count(*) FROM {table}");
            let row = client.query_one(&sql, &[]).await.unwrap();
            let (not_pseudonyms, all): (i64, i64) = (row.get(0), row.get(1));
            assert_eq!(not_pseudonyms, 0, "{table} holds addresses");
            assert!(table != "visits" || all == 3, "{table}: {all}");
        }
    } else {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log" || e == "jsonl") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let needle = [203u8, 0, 113, 9];
            assert!(
                !bytes.windows(4).any(|w| w == needle)
                    && !bytes.windows(9).any(|w| w == b"203.0.113"),
                "{} holds the address",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn cli_import_applies_the_ip_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("visits.db");
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"url":"https://a.com/","ip":"203.0.113.9","timestamp":"2025-01-01 00:00:00"}"#,
            "\n",
            r#"{"url":"https://a.com/","ip":"h:00000000000000ff","timestamp":"2025-01-01 00:00:01"}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = footfall_cli(
        &["import", file.to_str().unwrap(), "--ip-mode", "truncated"],
        &db,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = footfall_cli(&["export", "--format", "csv"], &db);
    let csv = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        csv.contains(",203.0.113.0,") && !csv.contains("203.0.113.9"),
        "{csv}"
    );
    assert!(csv.contains(",h:00000000000000ff,"), "{csv}");
}
