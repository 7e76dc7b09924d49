//! User agents as stored: trimmed, `unknown` when absent, cut at a character boundary.

/// User agents are cut to this many bytes (at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// Cuts a user agent to [`MAX_USER_AGENT_BYTES`] at a character boundary; empty means unknown.
pub fn clean_user_agent(raw: Option<&str>) -> String {
    let ua = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    truncate_at_char(ua, MAX_USER_AGENT_BYTES).to_owned()
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate_at_char(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cleaned() {
        assert_eq!(clean_user_agent(None), "unknown");
        assert_eq!(clean_user_agent(Some(&"é".repeat(300))).len(), 512);
    }
}
