//! The [`Reader`] guard of analytics reads: with `--analytics-token` set, they need
//! `Authorization: Bearer <token>` (the admin token works too); unset, they are public, as in
//! the original service (API.md §12).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// Proof that the request may read analytics.
#[derive(Debug, Clone, Copy)]
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = state.analytics_token.as_deref() else {
            return Ok(Self);
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let matches = |t: &str| bool::from(given.as_bytes().ct_eq(t.as_bytes()));
        if matches(token) || state.admin_token.as_deref().is_some_and(matches) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthorized(
                "A valid analytics token is required (Authorization: Bearer <token>)".into(),
            ))
        }
    }
}
