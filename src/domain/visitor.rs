//! Who made a visit, as stored: a client address, or under `--ip-mode hashed` (API.md §12) a
//! pseudonym that stands in for it, so that no address is stored anywhere.

use std::fmt;
use std::net::IpAddr;

use super::ip::{canonical_ip, ip_from_bytes, ip_to_bytes};

/// A visit's visitor: stored as 4 bytes (IPv4), 16 (IPv6) or 8 (a pseudonym).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visitor {
    Ip(IpAddr),
    /// A keyed hash of (IP, user agent, site) under the day's salt; written `h:` and 16 hex
    /// digits.
    Pseudonym(u64),
}

impl Visitor {
    /// The storage form: the address's bytes, or the pseudonym's 8 big-endian bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Self::Ip(ip) => ip_to_bytes(ip),
            Self::Pseudonym(h) => h.to_be_bytes().to_vec(),
        }
    }

    /// Inverse of [`Self::to_bytes`]; `None` for a blob of another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match <[u8; 8]>::try_from(bytes) {
            Ok(h) => Some(Self::Pseudonym(u64::from_be_bytes(h))),
            Err(_) => ip_from_bytes(bytes).map(Self::Ip),
        }
    }

    /// Reads the text form: an IP address (canonical) or `h:` and 16 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_prefix("h:") {
            Some(hex) if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u64::from_str_radix(hex, 16).ok().map(Self::Pseudonym)
            }
            Some(_) => None,
            None => text.parse().ok().map(|ip| Self::Ip(canonical_ip(ip))),
        }
    }

    /// The address, unless this is a pseudonym.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(ip),
            Self::Pseudonym(_) => None,
        }
    }
}

impl From<IpAddr> for Visitor {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(canonical_ip(ip))
    }
}

impl fmt::Display for Visitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Pseudonym(h) => write!(f, "h:{h:016x}"),
        }
    }
}

impl serde::Serialize for Visitor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A stored visitor as answers show it: its text, or `unknown` for a stored value that could
/// not be read back ([`Visitor::from_bytes`] gave `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitorText(pub Option<Visitor>);

impl fmt::Display for VisitorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(visitor) => visitor.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl serde::Serialize for VisitorText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips_through_bytes_and_text() {
        for text in ["10.1.2.3", "2001:db8::1", "h:00ff00ff00ff00ff"] {
            let v = Visitor::parse(text).unwrap();
            assert_eq!(v.to_string(), text);
            assert_eq!(Visitor::from_bytes(&v.to_bytes()), Some(v));
        }
        assert_eq!(
            Visitor::parse("::ffff:10.0.0.1").unwrap().to_string(),
            "10.0.0.1"
        );
        for bad in ["h:12", "h:zzzzzzzzzzzzzzzz", "1.2.3", ""] {
            assert_eq!(Visitor::parse(bad), None, "{bad}");
        }
        assert_eq!(Visitor::from_bytes(&[1, 2, 3]), None);
    }
}
