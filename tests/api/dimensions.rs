//! API.md §12, the dimensions: `/sources`, `/devices` and `/hourly` equal a brute-force count
//! of the visits sent (their referrers, page URLs and user agents read with the domain's own
//! parsers), for all sites and one site, in the rolled-up past and the fresh tail alike; and
//! every way a referrer arrives (POST /visit, bulk items, the pixel's `ref`, imports).

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use footfall::domain::{DEVICE_TYPES, Device, PageUrl, Source};
use serde_json::{Value, json};

use crate::common::TestApp;

crate::on_postgres!(
    dimensions_equal_a_brute_force_count,
    referrers_arrive_by_every_recording_path,
    parameters_are_checked,
);

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
];
const PAGES: &[&str] = &[
    "https://a.com/",
    "https://a.com/p?utm_source=news&utm_medium=email&utm_campaign=spring",
    "https://www.b.org/x?utm_source=ads",
    "https://c.net/y",
];
const REFERRERS: &[Option<&str>] = &[
    None,
    Some("https://www.google.com/search?q=1"),
    Some("https://news.ycombinator.com/item?id=1"),
    Some("https://a.com/other"),
    Some("not a url at all"),
];

struct Sent {
    page: &'static str,
    ip: String,
    ua: &'static str,
    referrer: Option<&'static str>,
    at: i64, // unix seconds
}

fn sent(n: usize, now: i64) -> Vec<Sent> {
    (0..n)
        .map(|i| Sent {
            page: PAGES[i * 7 % PAGES.len()],
            ip: format!("10.0.{}.{}", i % 3, i % 11),
            ua: AGENTS[i * 5 % AGENTS.len()],
            referrer: REFERRERS[i * 3 % REFERRERS.len()],
            // Spread over 60 hours, none within a minute of an hour boundary of the windows.
            at: now - 120 - (i as i64 * 3571) % (60 * 3600),
        })
        .collect()
}

fn jsonl(visits: &[Sent]) -> String {
    visits
        .iter()
        .map(|v| {
            let mut rec = json!({"url": v.page, "ip": v.ip, "user_agent": v.ua,
                "timestamp": v.at});
            if let Some(r) = v.referrer {
                rec["referrer"] = json!(r);
            }
            rec.to_string() + "\n"
        })
        .collect()
}

fn site_of(page: &str) -> String {
    PageUrl::parse(page).unwrap().site().to_owned()
}

fn top(counts: HashMap<String, i64>, limit: usize) -> Vec<(String, i64)> {
    let mut v: Vec<_> = counts.into_iter().filter(|(k, _)| !k.is_empty()).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(limit);
    v
}

fn pairs(map: &Value) -> Vec<(String, i64)> {
    map.as_object()
        .unwrap_or_else(|| panic!("not an object: {map}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
        .collect()
}

/// The expected `/sources` and `/devices` of `visits` in the last `hours` for `site`.
fn expected(visits: &[Sent], now: i64, hours: i64, site: Option<&str>, limit: usize) -> Value {
    let first = (now / 3600 - hours + 1) * 3600;
    let mut c: [HashMap<String, i64>; 7] = Default::default();
    for v in visits.iter().filter(|v| v.at >= first) {
        if site.is_some_and(|s| s != site_of(v.page)) {
            continue;
        }
        let s = Source::of(&PageUrl::parse(v.page).unwrap(), v.referrer);
        let d = Device::parse(v.ua);
        for (i, k) in [
            s.referrer,
            s.utm_source,
            s.utm_medium,
            s.utm_campaign,
            d.browser,
            d.os,
        ]
        .into_iter()
        .enumerate()
        {
            *c[i].entry(k).or_default() += 1;
        }
        *c[6].entry(d.device_type).or_default() += 1;
    }
    let [r, us, um, uc, b, o, t] = c;
    let types: Vec<(String, i64)> = DEVICE_TYPES
        .iter()
        .map(|k| (k.to_string(), t.get(*k).copied().unwrap_or(0)))
        .collect();
    json!({
        "sources": {"referrers": top(r, limit), "utm_source": top(us, limit),
                    "utm_medium": top(um, limit), "utm_campaign": top(uc, limit)},
        "devices": {"browsers": top(b, limit), "os": top(o, limit), "device_types": types},
    })
}

fn as_pairs_json(v: &Value) -> Value {
    // Turns an answer's objects into ordered [key, n] lists, comparable with `expected`.
    let mut out = serde_json::Map::new();
    for (k, map) in v.as_object().unwrap() {
        out.insert(k.clone(), json!(pairs(map)));
    }
    Value::Object(out)
}

async fn check_against_truth(app: &TestApp, visits: &[Sent], now: i64, what: &str) {
    for (hours, site, limit) in [
        (24, None, 10),
        (48, None, 10),
        (72, None, 2),
        (48, Some("a.com"), 10),
        (72, Some("b.org"), 10),
    ] {
        let q = format!(
            "hours={hours}&limit={limit}{}",
            site.map_or(String::new(), |s| format!("&site={s}"))
        );
        let want = expected(visits, now, hours, site, limit);
        for kind in ["sources", "devices"] {
            let reply = app.get(&format!("/{kind}?{q}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let got = as_pairs_json(&reply.json());
            let want = &want[kind];
            let want: Value = want
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<serde_json::Map<_, _>>()
                .into();
            assert_eq!(got, want, "{what}: /{kind}?{q}");
        }
        // /hourly: per hour in the window; totals over everything retained.
        let first = (now / 3600 - hours + 1) * 3600;
        let mine: Vec<&Sent> = visits
            .iter()
            .filter(|v| site.is_none_or(|s| s == site_of(v.page)))
            .collect();
        let mut by_hour = BTreeMap::new();
        for v in mine.iter().filter(|v| v.at >= first) {
            *by_hour
                .entry(footfall::domain::format_space((v.at - v.at % 3600) * 1000))
                .or_insert(0) += 1;
        }
        let ips: HashSet<&str> = mine.iter().map(|v| v.ip.as_str()).collect();
        let q = format!(
            "hours={hours}{}",
            site.map_or(String::new(), |s| format!("&site={s}"))
        );
        let reply = app.get(&format!("/hourly?{q}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        let got: BTreeMap<String, i64> = pairs(&body["by_hour"]).into_iter().collect();
        assert_eq!(got, by_hour, "{what}: /hourly?{q}");
        assert_eq!(
            body["total_visits"],
            json!(mine.len()),
            "{what}: /hourly?{q}"
        );
        assert_eq!(body["unique_ips"], json!(ips.len()), "{what}: /hourly?{q}");
    }
}

#[tokio::test]
async fn dimensions_equal_a_brute_force_count() {
    let app = TestApp::new();
    let now = footfall::domain::now_millis() / 1000;
    let visits = sent(400, now);
    let report = app.import_jsonl(&jsonl(&visits)).await;
    assert_eq!(report.imported, 400, "{:?}", report.errors);
    check_against_truth(&app, &visits, now, "imported").await;
    // Then live visits: the tail before the next roll-up, counted the same way.
    let mut all = visits;
    for i in 0..30 {
        let (page, ua, referrer) = (PAGES[i % 4], AGENTS[i % 6], REFERRERS[i % 5]);
        let mut body = json!({"url": page});
        if let Some(r) = referrer {
            body["referrer"] = json!(r);
        }
        let reply = app
            .send(
                Request::post("/visit")
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", format!("10.9.0.{i}"))
                    .header("user-agent", ua)
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        all.push(Sent {
            page,
            ip: format!("10.9.0.{i}"),
            ua,
            referrer,
            at: now,
        });
    }
    check_against_truth(&app, &all, now, "with live visits").await;
    assert_eq!(app.rollup_mismatches().await, Vec::<String>::new());
}

#[tokio::test]
async fn referrers_arrive_by_every_recording_path() {
    let app = TestApp::new();
    let post = |body: Value| {
        Request::post("/visit")
            .header("content-type", "text/plain")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let r = app
        .send(post(
            json!({"url": "https://a.com/", "referrer": "https://WWW.Google.com/?q"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let bulk = json!([
        {"url": "https://a.com/1", "referrer": "https://t.co/x"},
        {"url": "https://a.com/2", "referrer": "https://www.a.com/self"},
        {"url": "https://a.com/3"}
    ]);
    let r = app.post_json("/bulk-visits", &bulk).await;
    assert_eq!(r.json()["visits_recorded"], 3, "{}", r.text());
    let r = app
        .get("/pixel.gif?url=https%3A%2F%2Fa.com%2Fpx&ref=https%3A%2F%2Fduckduckgo.com%2F")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get("/?url=https://a.com/legacy").await;
    assert_eq!(r.status, StatusCode::OK);
    let report = app
            .import_jsonl(
                r#"{"url":"https://a.com/i","ip":"10.0.0.1","timestamp":"2020-01-01 00:00:00","referrer":"https://bing.com/"}"#,
            )
            .await;
    assert_eq!(report.imported, 1);
    let bad = app
        .post_json("/visit", &json!({"url": "https://a.com/", "referrer": 7}))
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bad.text()
    );

    let got = app.get("/sources?hours=1").await.json();
    let referrers: BTreeMap<String, i64> = pairs(&got["referrers"]).into_iter().collect();
    let want: BTreeMap<String, i64> = [
        ("google.com", 1),
        ("t.co", 1),
        ("duckduckgo.com", 1),
        ("(direct)", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(referrers, want, "{got}");
    // The imported visit is from 2020: outside the window, but kept with its referrer.
    let year = app.get("/sources?hours=8760").await.json();
    assert!(year["referrers"].get("bing.com").is_none(), "{year}");
}

#[tokio::test]
async fn parameters_are_checked() {
    let app = TestApp::new();
    for path in ["/sources", "/devices", "/hourly"] {
        for q in [
            "hours=0",
            "hours=8761",
            "hours=x",
            "site=a%2Fb",
            "site=",
            "site=a%20b",
        ] {
            let r = app.get(&format!("{path}?{q}")).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path}?{q}: {}",
                r.text()
            );
            assert!(!r.detail().is_empty());
        }
        let r = app.get(&format!("{path}?site=nobody.example")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    for q in ["limit=0", "limit=1001", "limit=-1"] {
        let r = app.get(&format!("/sources?{q}")).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{q}: {}",
            r.text()
        );
    }
    let empty = app.get("/devices?site=nobody.example").await.json();
    assert_eq!(
        empty,
        json!({"browsers": {}, "os": {}, "device_types":
                {"desktop": 0, "mobile": 0, "tablet": 0, "bot": 0}})
    );
    let hourly = app.get("/hourly").await.json();
    assert_eq!(
        hourly,
        json!({"by_hour": {}, "total_visits": 0, "unique_ips": 0})
    );
    let sql = app.get("/sources?site=x'%3BDROP--TABLE--visits%3B--").await;
    assert_eq!(sql.status, StatusCode::OK, "{}", sql.text());
}
