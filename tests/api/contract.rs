//! What the OpenAPI document promises and the code now does alike (issue 25): bodies read as
//! their media type says, integers written `5.0`, every export filter checked, and the
//! breakdown documented as the four operations it is.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::TestApp;

const RECORD: &str = r#"{"url":"https://a.com/","ip":"10.0.0.1","user_agent":"UA","timestamp":"2025-07-28 10:30:00"}"#;

#[tokio::test]
async fn an_import_body_is_read_as_its_media_type_says() {
    let app = TestApp::new();
    // application/json: one array, anything else refused.
    for body in ["{}", RECORD, "5", ""] {
        let reply = app.post_raw("/import", "application/json", body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
    }
    let reply = app
        .post_raw("/import", "application/json", format!("[{RECORD}, 5]"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        (
            reply.json()["imported"].clone(),
            reply.json()["skipped"].clone()
        ),
        (json!(1), json!(1))
    );
    // application/x-ndjson: lines, even one that looks like an array.
    let reply = app
        .post_raw("/import", "application/x-ndjson", format!("[]\n{RECORD}\n"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let report = reply.json();
    assert_eq!(
        (report["imported"].clone(), report["skipped"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(report["errors"][0]["line"], 1);
    // No media type: told by the first byte, as `footfall import` does.
    let reply = app
        .post_raw("/import", "text/plain", format!("[{RECORD}]"))
        .await;
    assert_eq!(reply.json()["imported"], 1);
    assert_eq!(app.stored_visits().await, 3);
}

#[tokio::test]
async fn clicks_written_with_a_zero_fraction_are_integers() {
    let app = TestApp::new();
    let reply = app
        .post_json(
            "/domains",
            &json!({"timestamp": 1_700_000_000, "a.com": 80.0}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["sites"], 1);
    for bad in [json!(80.5), json!(-1.0), json!(1e10)] {
        let reply = app
            .post_json(
                "/domains",
                &json!({"timestamp": 1_700_000_000, "a.com": bad}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[tokio::test]
async fn a_malformed_filter_is_refused_even_where_range_takes_precedence() {
    let app = TestApp::new();
    for query in [
        "range=2025-01-01,2025-02-01&start_date=nope",
        "range=2025-01-01,2025-02-01&end_date=2025-02-30",
        "range=2025-01-01,2025-02-01&since=yesterday",
    ] {
        let reply = app.get(&format!("/all-visits?{query}")).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
    }
    let reply = app
        .get(
            "/all-visits?range=2025-01-01,2025-02-01&start_date=2025-01-05&since=2025/01/02%209:00",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn the_document_has_one_breakdown_operation_per_depth_and_every_path_parameter_required() {
    let app = TestApp::new();
    let doc = app.get("/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    let breakdowns: Vec<&String> = paths
        .keys()
        .filter(|p| p.starts_with("/breakdown/"))
        .collect();
    assert_eq!(breakdowns.len(), 4, "{breakdowns:?}");
    for (path, item) in paths {
        for op in item.as_object().unwrap().values() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    assert_eq!(param["required"], true, "{path} {}", param["name"]);
                    assert!(
                        param["schema"]["type"] != json!(["integer", "null"]),
                        "{path} {}: a path parameter cannot be null",
                        param["name"]
                    );
                }
            }
        }
    }
    // Each depth answers.
    for path in [
        "/breakdown/all/pageview/2025",
        "/breakdown/all/pageview/2025/2",
        "/breakdown/all/pageview/2025/2/28",
        "/breakdown/all/pageview/2025/2/28/23",
    ] {
        assert_eq!(app.get(path).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(
        app.get("/breakdown/all/pageview/2025/2/30").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

crate::on_postgres!(
    an_import_body_is_read_as_its_media_type_says,
    clicks_written_with_a_zero_fraction_are_integers,
    a_malformed_filter_is_refused_even_where_range_takes_precedence,
);
