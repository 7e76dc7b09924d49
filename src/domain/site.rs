//! Site names as given in paths and in `POST /domains`.

use super::site_of_host;

/// A site name as given in a path or in `POST /domains`: 1–253 printable, non-space ASCII
/// characters without `/`; stored lower-case without `www.`.
pub fn parse_site(raw: &str) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then(|| site_of_host(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_are_lower_case_without_www() {
        assert_eq!(parse_site("WWW.Acme.com").as_deref(), Some("acme.com"));
    }
}
