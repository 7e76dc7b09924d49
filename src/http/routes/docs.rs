//! The OpenAPI 3.1 document (utoipa) and the pages that show it: Swagger UI at `/docs`, served
//! from the binary (vendored, validator off: the browser fetches nothing from outside), and
//! ReDoc at `/redoc`, whose script comes from its CDN as in the original service.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use bytes::Bytes;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_redoc::Redoc;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{ErrorBody, admin, analytics, ops, record};
use crate::http::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "footfall",
        description = "Page-visit analytics: durable recording, exact analytics from rollups, streaming export. A drop-in superset of the FastAPI Page Visit Counter.",
    ),
    paths(
        record::record_visit, record::record_visit_legacy, record::record_bulk_visits,
        record::count_page_visit, record::page_visit_count,
        analytics::get_summary, analytics::get_url_stats, analytics::get_site_stats,
        admin::export_visits, admin::import_visits, admin::cleanup_visits, admin::add_domain_clicks,
        ops::health, ops::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "recording", description = "Record visits (API.md §1)"),
        (name = "analytics", description = "Analytics from rollups (§2)"),
        (name = "admin", description = "Export, import, cleanup (§3, §4)"),
        (name = "counters", description = "Per-page counters (§5)"),
        (name = "sites", description = "Calendar breakdowns and top domains (§6, §7)"),
        (name = "ops", description = "Health and metrics (§4)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The complete document, with the routes other modules add.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::calendar::CalendarDoc::openapi());
    doc.merge(super::web::WebDoc::openapi());
    doc.merge(super::dimensions::DimensionsDoc::openapi());
    doc
}

/// The document served at `/openapi.json`: [`openapi`] with the constraints of
/// [`super::contract`] (added after the merge: they reach into every module's operations).
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).expect("the document is JSON");
    super::contract::patch(&mut doc);
    doc
}

/// The document's JSON and the ReDoc page embedding it, built on the first request for either:
/// building them runs the generated code of every operation and schema, which a server that
/// is never asked for its documentation need not page in (about 2 MB of idle RSS).
fn documents() -> &'static (Bytes, String) {
    static DOCUMENTS: OnceLock<(Bytes, String)> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let doc = openapi_json();
        let body = Bytes::from(serde_json::to_vec(&doc).expect("the document is JSON"));
        (body, Redoc::new(doc).to_html())
    })
}

pub fn router() -> Router<AppState> {
    let swagger =
        SwaggerUi::new("/docs").config(Config::from("/openapi.json").validator_url("none"));
    Router::new()
        .route(
            "/openapi.json",
            get(|| async { ([(CONTENT_TYPE, "application/json")], documents().0.clone()) }),
        )
        .route("/redoc", get(|| async { Html(documents().1.as_str()) }))
        .merge(swagger)
}
