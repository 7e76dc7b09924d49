//! `--retention-days N` (API.md §12): visits older than N days are deleted, exactly as
//! `DELETE /cleanup?days=N` deletes them, at start and then every hour. On several nodes each
//! runs it; a cleanup that finds nothing older deletes nothing, so running it more than once
//! is harmless.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{cleanup_cutoff, format_iso, now_millis};
use crate::store::Store;

const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(store: Arc<Store>, days: u32) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let Ok(cutoff) = cleanup_cutoff(now_millis(), i64::from(days)) else {
            return;
        };
        match store.cleanup(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(
                    deleted,
                    cutoff = format_iso(cutoff),
                    days,
                    "retention: cleanup done"
                );
            }
            Err(err) => {
                tracing::warn!(error = %err, "retention: cleanup failed; retried in an hour")
            }
        }
    }
}
