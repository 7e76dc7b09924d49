//! Event-bus ingest without a service (API.md §11): the store's idempotent recording, and the
//! ZeroMQ subscriber against a publisher in the test.

use std::time::Duration;

use footfall::domain::{EventId, IdentifiedVisit, NewVisit, PageUrl, now_millis};
use serde_json::json;
use zeromq::{Socket, SocketSend, ZmqMessage};

use crate::common::{TestApp, eventually, metric};

fn event(id: Option<&str>, url: &str) -> IdentifiedVisit {
    IdentifiedVisit {
        id: id.map(|id| EventId::parse(id).unwrap()),
        visit: NewVisit::pageview(
            PageUrl::parse(url).unwrap(),
            "10.0.0.1".parse().unwrap(),
            "UA".into(),
            now_millis(),
        ),
    }
}

#[tokio::test]
async fn record_events_skips_ids_already_recorded_in_earlier_calls_and_the_same_one() {
    let app = TestApp::new();
    let store = app.store();
    let long_ago = 0;
    let first = store
        .record_events(
            vec![
                event(Some("a"), "https://ids.example/1"),
                event(None, "https://ids.example/2"),
                event(Some("a"), "https://ids.example/3"),
                event(Some("b"), "https://ids.example/4"),
            ],
            long_ago,
        )
        .await
        .unwrap();
    assert_eq!(first, [true, true, false, true]);
    let second = store
        .record_events(
            vec![
                event(Some("b"), "https://ids.example/5"),
                event(None, "https://ids.example/6"),
                event(Some("c"), "https://ids.example/7"),
            ],
            long_ago,
        )
        .await
        .unwrap();
    assert_eq!(second, [false, true, true]);
    assert_eq!(app.stored_visits().await, 5);
    assert_eq!(app.total_visits("https://ids.example/3").await, 0);
    assert_eq!(app.total_visits("https://ids.example/7").await, 1);
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn an_id_is_forgotten_once_its_window_is_over() {
    let app = TestApp::new();
    let store = app.store();
    let once = store
        .record_events(vec![event(Some("x"), "https://window.example/")], 0)
        .await
        .unwrap();
    assert_eq!(once, [true]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Every id first seen before now is forgotten: "x" counts again.
    let again = store
        .record_events(
            vec![event(Some("x"), "https://window.example/")],
            now_millis(),
        )
        .await
        .unwrap();
    assert_eq!(again, [true]);
    assert_eq!(app.total_visits("https://window.example/").await, 2);
}

/// A PUB socket bound on a free loopback port; answers it and its endpoint.
async fn publisher() -> (zeromq::PubSocket, String) {
    let mut socket = zeromq::PubSocket::new();
    let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap();
    (socket, endpoint.to_string())
}

async fn publish(socket: &mut zeromq::PubSocket, topic: &str, event: &serde_json::Value) {
    let mut message = ZmqMessage::from(topic.to_owned());
    message.push_back(event.to_string().into());
    socket.send(message).await.unwrap();
}

/// Publishes `probe` (which has an id) every 50 ms until one visit is stored: PUB drops what
/// it sends before a subscriber's subscription reaches it.
async fn publish_until_counted(
    socket: &mut zeromq::PubSocket,
    topic: &str,
    probe: &serde_json::Value,
    app: &TestApp,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while app.stored_visits().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the probe was never counted"
        );
        publish(socket, topic, probe).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stored_visits().await, 1, "the probe counts once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_events_are_counted_and_a_bad_one_or_another_topic_is_not() {
    let (mut socket, endpoint) = publisher().await;
    let (app, stopper) = TestApp::with_buses(|args| {
        args.bus.zmq_sub = Some(endpoint.clone());
        args.bus.zmq_topic = "visits".into();
    });
    // At most once: a probe, always with the same id, until one is counted.
    let probe = json!({"url": "https://zmq.example/probe", "id": "probe"});
    publish_until_counted(&mut socket, "visits", &probe, &app).await;
    assert_eq!(app.subscriber_state("zmq").await, "consuming");

    let n = 300;
    for i in 0..n {
        publish(
            &mut socket,
            "visits.page",
            &json!({"url": format!("https://zmq.example/p{i}"), "id": format!("e{i}"),
                    "ip": "10.1.2.3", "timestamp": "2024-03-05 10:00:00"}),
        )
        .await;
        if i == 100 {
            publish(&mut socket, "visits", &json!({"url": "not a url"})).await;
            publish(
                &mut socket,
                "other",
                &json!({"url": "https://zmq.example/other"}),
            )
            .await;
        }
    }
    // An order, named by `type` as the seed's publisher does, republished: counted once.
    let order = json!({"url": "https://zmq.example/checkout", "type": "order", "id": "o-1",
                       "timestamp": "2024-03-05 11:00:00"});
    publish(&mut socket, "visits", &order).await;
    publish(&mut socket, "visits", &order).await;
    eventually(Duration::from_secs(30), "every event counted", || async {
        app.stored_visits().await == 1 + n + 1
    })
    .await;
    eventually(Duration::from_secs(30), "the breakdowns", || async {
        app.breakdown_sum("/breakdown/zmq.example/order/2024/3/5")
            .await
            == 1
            && app
                .breakdown_sum("/breakdown/zmq.example/pageview/2024/3/5")
                .await
                == n
    })
    .await;
    let orders = app
        .get("/breakdown/zmq.example/order/2024/3/5")
        .await
        .json();
    assert_eq!(orders["data"]["11"], 1);
    let pageviews = app
        .get("/breakdown/zmq.example/pageview/2024/3/5")
        .await
        .json();
    assert_eq!(pageviews["data"]["10"], n);
    assert_eq!(app.total_visits("https://zmq.example/other").await, 0);
    let metrics = app.get("/metrics").await.text();
    let rejected = [("bus", "zmq"), ("result", "rejected")];
    assert!(metric(&metrics, "footfall_bus_events_total", &rejected) >= 1.0);

    app.stop_buses(stopper).await;
    assert_eq!(app.subscriber_state("zmq").await, "stopped");
    assert!(app.rollup_mismatches().await.is_empty());
}

#[tokio::test]
async fn a_zmq_publisher_that_is_not_there_yet_shows_on_health_and_is_retried() {
    let port = crate::common::free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let (app, stopper) = TestApp::with_buses(|args| args.bus.zmq_sub = Some(endpoint.clone()));
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "a bus never makes the node unhealthy");
    assert_eq!(health.json()["subscribers"][0]["source"], endpoint.as_str());
    // The publisher appears: the subscriber connects and counts what it then sends.
    let mut socket = zeromq::PubSocket::new();
    socket.bind(&endpoint).await.unwrap();
    let probe = json!({"url": "https://late.example/", "id": "late"});
    publish_until_counted(&mut socket, "", &probe, &app).await;
    app.stop_buses(stopper).await;
}

crate::on_postgres!(
    record_events_skips_ids_already_recorded_in_earlier_calls_and_the_same_one,
    an_id_is_forgotten_once_its_window_is_over,
    zmq_events_are_counted_and_a_bad_one_or_another_topic_is_not,
    zmq_events_follow_the_privacy_policy,
);

/// API.md §12 on a bus: referrers are kept, bots are ignored under `--bots exclude` (and
/// acknowledged, never retried), and `--ip-mode hashed` stores pseudonyms for events too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_events_follow_the_privacy_policy() {
    let (mut socket, endpoint) = publisher().await;
    let (app, stopper) = TestApp::with_buses(|args| {
        args.bus.zmq_sub = Some(endpoint.clone());
        args.privacy.ip_mode = footfall::privacy::IpMode::Hashed;
        args.privacy.bots = footfall::privacy::BotPolicy::Exclude;
    });
    let probe = json!({"url": "https://zmq.example/probe", "id": "probe", "ip": "203.0.113.9"});
    publish_until_counted(&mut socket, "", &probe, &app).await;
    publish(
        &mut socket,
        "",
        &json!({"url": "https://zmq.example/a", "id": "r1", "ip": "203.0.113.9",
                "referrer": "https://news.ycombinator.com/item?id=1"}),
    )
    .await;
    publish(
        &mut socket,
        "",
        &json!({"url": "https://zmq.example/b", "id": "bot", "ip": "203.0.113.9",
                "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}),
    )
    .await;
    publish(
        &mut socket,
        "",
        &json!({"url": "https://zmq.example/c", "id": "last"}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the events after the probe",
        || async { app.stored_visits().await == 3 },
    )
    .await;
    let sources = app.get("/sources").await.json();
    assert_eq!(sources["referrers"]["news.ycombinator.com"], 1, "{sources}");
    let export = app.get("/all-visits?format=csv").await.text();
    assert!(!export.contains("203.0.113"), "{export}");
    assert!(
        !export.contains("zmq.example/b"),
        "the bot is stored nowhere: {export}"
    );
    let metrics = app.get("/metrics").await.text();
    let ignored = [("bus", "zmq"), ("result", "ignored")];
    assert!(metric(&metrics, "footfall_bus_events_total", &ignored) >= 1.0);
    app.stop_buses(stopper).await;
}
