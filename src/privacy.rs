//! The privacy controls of API.md §12: which visits are stored at all (`--ignore-ips`,
//! `--respect-dnt`, `--bots exclude`), and in what form the visitor is stored (`--ip-mode`).
//!
//! Applied to every visit that arrives over HTTP or a bus before anything is stored, so under
//! `--ip-mode hashed` no address reaches a table, an export or a log line.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Mutex;

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use siphasher::sip::SipHasher24;

use crate::domain::{DAY_MS, NewVisit, UnixMillis, Visitor, canonical_ip, is_bot};
use crate::store::{Store, StoreError};

/// How a visitor's address is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum IpMode {
    /// The address as it is (the original service's behaviour).
    #[default]
    Full,
    /// IPv4 kept to its /24, IPv6 to its /48.
    Truncated,
    /// Never stored: a keyed hash of (IP, user agent, site) under a salt that rotates daily.
    Hashed,
}

/// What to do with visits from known bots and crawlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum BotPolicy {
    #[default]
    Keep,
    /// Answered `"status": "ignored"` and stored nowhere.
    Exclude,
}

/// The privacy flags of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct PrivacyArgs {
    /// How visitors' addresses are stored: `full`; `truncated` (IPv4 to /24, IPv6 to /48);
    /// `hashed` (never stored: a keyed hash of IP, user agent and site under a salt that
    /// rotates daily stands in; unique visitors then count pseudonyms). Applies to visits
    /// recorded after it is set.
    #[arg(long, env = "FOOTFALL_IP_MODE", value_enum, default_value_t = IpMode::Full)]
    pub ip_mode: IpMode,
    /// Client networks whose visits are answered `"status": "ignored"` and stored nowhere,
    /// comma-separated CIDRs or addresses (e.g. the office: `203.0.113.0/24`).
    #[arg(long, env = "FOOTFALL_IGNORE_IPS", value_delimiter = ',', value_parser = parse_net)]
    pub ignore_ips: Vec<IpNet>,
    /// Ignore (answer `"status": "ignored"`, store nothing) requests sent with `DNT: 1` or
    /// `Sec-GPC: 1`.
    #[arg(long, env = "FOOTFALL_RESPECT_DNT")]
    pub respect_dnt: bool,
    /// `keep` visits from known bots and crawlers (they show as device type `bot`), or
    /// `exclude` them: answered `"status": "ignored"`, stored nowhere, counted in /metrics.
    #[arg(long, env = "FOOTFALL_BOTS", value_enum, default_value_t = BotPolicy::Keep)]
    pub bots: BotPolicy,
}

/// An address or a network: `10.0.0.1` is `10.0.0.1/32`.
pub fn parse_net(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is neither a CIDR network nor an IP address"))
}

/// Why a visit is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The client is in `--ignore-ips`.
    Address,
    /// `DNT: 1` or `Sec-GPC: 1` under `--respect-dnt`.
    DoNotTrack,
    /// A known bot under `--bots exclude`.
    Bot,
}

impl Ignored {
    /// The `reason` label of `footfall_visits_ignored_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Address => "ignored_ip",
            Self::DoNotTrack => "dnt",
            Self::Bot => "bot",
        }
    }

    fn count(self) {
        metrics::counter!("footfall_visits_ignored_total", "reason" => self.as_str()).increment(1);
    }
}

/// A visit after [`Privacy::screen`].
#[derive(Debug)]
pub struct Screened {
    /// Its visitor in the stored form (when it is to be stored).
    pub visit: NewVisit,
    /// Why it is not to be stored; `None` to store it.
    pub ignored: Option<Ignored>,
}

/// The privacy policy of one node.
#[derive(Debug, Default)]
pub struct Privacy {
    args: PrivacyArgs,
    /// The salt of `--ip-mode hashed` for one day, kept until the day changes.
    salt: Mutex<Option<(i64, [u8; 16])>>,
}

impl Privacy {
    pub fn new(args: PrivacyArgs) -> Self {
        Self {
            args,
            salt: Mutex::default(),
        }
    }

    pub fn ip_mode(&self) -> IpMode {
        self.args.ip_mode
    }

    /// `Err` when a visit from `ip` with `user_agent` is not to be stored at all; `do_not_track`
    /// says whether the request carried `DNT: 1` or `Sec-GPC: 1`. Counts what it ignores.
    pub fn admit(&self, ip: IpAddr, user_agent: &str, do_not_track: bool) -> Result<(), Ignored> {
        let verdict = if self.args.ignore_ips.iter().any(|net| net.contains(&ip)) {
            Err(Ignored::Address)
        } else if self.args.respect_dnt && do_not_track {
            Err(Ignored::DoNotTrack)
        } else if self.args.bots == BotPolicy::Exclude && is_bot(user_agent) {
            Err(Ignored::Bot)
        } else {
            Ok(())
        };
        if let Err(why) = verdict {
            why.count();
        }
        verdict
    }

    /// The visitor stored for a visit from `ip` with `user_agent` to `site` at `now`: the
    /// address, its network (`truncated`) or its pseudonym (`hashed`; reads the day's salt from
    /// the store when the day changes, so every node of one database agrees).
    async fn visitor(
        &self,
        store: &Store,
        ip: IpAddr,
        user_agent: &str,
        site: &str,
        now: UnixMillis,
    ) -> Result<Visitor, StoreError> {
        let ip = canonical_ip(ip);
        Ok(match self.args.ip_mode {
            IpMode::Full => Visitor::Ip(ip),
            IpMode::Truncated => Visitor::Ip(truncate(ip)),
            IpMode::Hashed => {
                let salt = self.salt_of(store, now.div_euclid(DAY_MS)).await?;
                Visitor::Pseudonym(pseudonym(&salt, ip, user_agent, site))
            }
        })
    }

    /// Applies the policy to `visit` (sent with `DNT`/`Sec-GPC` when `do_not_track`): the
    /// visit with its visitor in stored form, and why it is not to be stored, if it is not.
    pub async fn screen(
        &self,
        store: &Store,
        visit: NewVisit,
        do_not_track: bool,
    ) -> Result<Screened, StoreError> {
        let ignored = match visit.ip.ip() {
            Some(ip) => self.admit(ip, &visit.user_agent, do_not_track).err(),
            None => None,
        };
        if ignored.is_some() {
            return Ok(Screened { visit, ignored });
        }
        Ok(Screened {
            visit: self.anonymize(store, visit).await?,
            ignored: None,
        })
    }

    /// `visit` with its visitor in the form `--ip-mode` stores (imports: every record is
    /// kept, but no address is stored that the mode would not store). A visitor that is
    /// already a pseudonym (an imported export, a bus event) is kept as it is.
    pub async fn anonymize(
        &self,
        store: &Store,
        mut visit: NewVisit,
    ) -> Result<NewVisit, StoreError> {
        if let Some(ip) = visit.ip.ip() {
            visit.ip = self
                .visitor(store, ip, &visit.user_agent, visit.url.site(), visit.at)
                .await?;
        }
        Ok(visit)
    }

    async fn salt_of(&self, store: &Store, day: i64) -> Result<[u8; 16], StoreError> {
        if let Some((d, salt)) = *self.salt.lock().expect("salt lock")
            && d == day
        {
            return Ok(salt);
        }
        let salt = store.daily_salt(day).await?;
        *self.salt.lock().expect("salt lock") = Some((day, salt));
        Ok(salt)
    }
}

/// IPv4 to its /24, IPv6 to its /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    let prefix = if ip.is_ipv4() { 24 } else { 48 };
    IpNet::new(ip, prefix).map_or(ip, |net| net.network())
}

/// SipHash-2-4 of (IP, user agent, site) under the day's salt. The fields are length-prefixed
/// so that no two different triples hash the same bytes.
fn pseudonym(salt: &[u8; 16], ip: IpAddr, user_agent: &str, site: &str) -> u64 {
    let mut h = SipHasher24::new_with_key(salt);
    let ip = crate::domain::ip_to_bytes(ip);
    for part in [ip.as_slice(), user_agent.as_bytes(), site.as_bytes()] {
        h.write_u64(part.len() as u64);
        h.write(part);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_network_only() {
        assert_eq!(
            truncate("203.0.113.77".parse().unwrap()).to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            truncate("2001:db8:abcd:12:1::9".parse().unwrap()).to_string(),
            "2001:db8:abcd::"
        );
    }

    #[test]
    fn pseudonyms_depend_on_every_input_and_the_salt() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let base = pseudonym(&[1; 16], ip, "UA", "a.com");
        assert_eq!(base, pseudonym(&[1; 16], ip, "UA", "a.com"));
        assert_ne!(base, pseudonym(&[2; 16], ip, "UA", "a.com"));
        assert_ne!(
            base,
            pseudonym(&[1; 16], "10.0.0.2".parse().unwrap(), "UA", "a.com")
        );
        assert_ne!(base, pseudonym(&[1; 16], ip, "UB", "a.com"));
        assert_ne!(base, pseudonym(&[1; 16], ip, "UA", "b.com"));
        assert_ne!(
            pseudonym(&[1; 16], ip, "UAa", ".com"),
            pseudonym(&[1; 16], ip, "UA", "a.com")
        );
    }

    #[test]
    fn ignore_rules_apply_in_order() {
        let p = Privacy::new(PrivacyArgs {
            ignore_ips: vec![parse_net("10.1.0.0/16").unwrap(), parse_net("::1").unwrap()],
            respect_dnt: true,
            bots: BotPolicy::Exclude,
            ..PrivacyArgs::default()
        });
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(
            p.admit("10.1.2.3".parse().unwrap(), firefox, false),
            Err(Ignored::Address)
        );
        assert_eq!(
            p.admit("::1".parse().unwrap(), firefox, false),
            Err(Ignored::Address)
        );
        assert_eq!(
            p.admit("10.2.0.1".parse().unwrap(), firefox, true),
            Err(Ignored::DoNotTrack)
        );
        assert_eq!(
            p.admit("10.2.0.1".parse().unwrap(), "Googlebot/2.1", false),
            Err(Ignored::Bot)
        );
        assert_eq!(p.admit("10.2.0.1".parse().unwrap(), firefox, false), Ok(()));
        let default = Privacy::default();
        assert_eq!(
            default.admit("10.1.2.3".parse().unwrap(), "Googlebot/2.1", true),
            Ok(())
        );
    }
}
