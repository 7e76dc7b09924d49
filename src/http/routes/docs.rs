//! The OpenAPI 3.1 document (utoipa) and the pages that show it: Swagger UI at `/docs`, served
//! from the binary (vendored, validator off: the browser fetches nothing from outside), and
//! ReDoc at `/redoc`, whose script comes from its CDN as in the original service.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_redoc::{Redoc, Servable};
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
    doc
}

pub fn router() -> Router<AppState> {
    let doc = openapi();
    let swagger = SwaggerUi::new("/docs")
        .url("/openapi.json", doc.clone())
        .config(Config::from("/openapi.json").validator_url("none"));
    Router::new()
        .merge(swagger)
        .merge(Redoc::with_url("/redoc", doc))
}
