//! Per-page counter ids.

/// A per-page counter id (seed 004): 1–256 characters of `[A-Za-z0-9._~-]`.
pub fn parse_page_id(raw: &str) -> Option<&str> {
    let ok = (1..=256).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    ok.then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ids_are_checked() {
        assert_eq!(parse_page_id("home-1.2_~"), Some("home-1.2_~"));
        assert_eq!(parse_page_id("a/b"), None);
    }
}
