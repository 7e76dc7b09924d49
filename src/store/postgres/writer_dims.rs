//! The writer's side of the dimensions of API.md §12: the `sources` and `devices` ids of a
//! batch's visits, from the node's cache when known, else looked up or inserted in the batch's
//! transaction.
//!
//! A device is cached twice: by user agent (so an agent is parsed once per node, not once per
//! visit) and by its (browser, os, device type) row. `devices.id` is a smallint, so rows are
//! looked up before they are inserted: `INSERT … ON CONFLICT DO NOTHING` draws an id for every
//! row it tries, and doing that for every cache miss (each node start, each agent) would use
//! the ids up. Only a true race between two nodes adding the same new row burns one.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use tokio_postgres::Error;

use crate::domain::{Device, NewVisit, Source};

/// Distinct user agents whose device id a node remembers; past it that cache starts over.
const MAX_AGENTS: usize = 200_000;

/// The ids a node has seen committed (rows are never deleted, so they stay right).
#[derive(Debug, Default)]
pub struct Cache {
    sources: HashMap<Source, i64>,
    agent_devices: HashMap<String, i16>,
    devices: HashMap<Device, i16>,
}

/// The ids of one batch's sources and user agents' devices.
#[derive(Debug, Default)]
pub struct BatchIds {
    pub sources: HashMap<Source, i64>,
    pub agent_devices: HashMap<String, i16>,
}

/// What the cache did not know: sources, and user agents not seen yet.
#[derive(Debug, Default)]
pub struct Missing {
    sources: HashSet<Source>,
    agents: HashSet<String>,
}

/// The missing agents parsed (outside the cache's lock), and the devices the cache lacks.
#[derive(Debug, Default)]
pub struct Parsed {
    sources: HashSet<Source>,
    agents: HashMap<String, Device>,
    devices: HashSet<Device>,
}

/// Ids a committed batch learnt, for the cache.
#[derive(Debug, Default)]
pub struct Learnt {
    sources: HashMap<Source, i64>,
    agent_devices: HashMap<String, i16>,
    devices: HashMap<Device, i16>,
}

impl Cache {
    /// Fills `ids` from the cache; answers what it lacks.
    pub fn look(&self, visits: &[&NewVisit], ids: &mut BatchIds) -> Missing {
        let mut missing = Missing::default();
        for v in visits {
            if !ids.sources.contains_key(&v.source) {
                match self.sources.get(&v.source) {
                    Some(&id) => {
                        ids.sources.insert(v.source.clone(), id);
                    }
                    None => {
                        missing.sources.insert(v.source.clone());
                    }
                }
            }
            if !ids.agent_devices.contains_key(&v.user_agent) {
                match self.agent_devices.get(&v.user_agent) {
                    Some(&id) => {
                        ids.agent_devices.insert(v.user_agent.clone(), id);
                    }
                    None => {
                        missing.agents.insert(v.user_agent.clone());
                    }
                }
            }
        }
        missing
    }

    /// `visit`'s source and device ids, if the cache knows both.
    pub fn ids_of(&self, visit: &NewVisit) -> Option<(i64, i16)> {
        Some((
            *self.sources.get(&visit.source)?,
            *self.agent_devices.get(&visit.user_agent)?,
        ))
    }

    /// Fills `ids` with the agents whose parsed device the cache knows; notes the devices it
    /// does not.
    pub fn look_devices(&self, parsed: &mut Parsed, ids: &mut BatchIds) {
        for (ua, device) in &parsed.agents {
            match self.devices.get(device) {
                Some(&id) => {
                    ids.agent_devices.insert(ua.clone(), id);
                }
                None => {
                    parsed.devices.insert(device.clone());
                }
            }
        }
    }

    /// Remembers what a committed batch learnt.
    pub fn learn(&mut self, learnt: Learnt) {
        if self.sources.len() + learnt.sources.len() > MAX_AGENTS {
            self.sources.clear();
        }
        self.sources.extend(learnt.sources);
        if self.agent_devices.len() + learnt.agent_devices.len() > MAX_AGENTS {
            self.agent_devices.clear();
        }
        self.agent_devices.extend(learnt.agent_devices);
        self.devices.extend(learnt.devices);
    }
}

impl Missing {
    /// Parses the user agents the cache lacked.
    pub fn parse(self) -> Parsed {
        Parsed {
            sources: self.sources,
            agents: self
                .agents
                .into_iter()
                .map(|ua| {
                    let device = Device::parse(&ua);
                    (ua, device)
                })
                .collect(),
            devices: HashSet::new(),
        }
    }
}

/// Looks up or inserts what the cache lacked, inside the batch's transaction (sources, then
/// devices, each in sorted order: two nodes adding the same rows wait for each other rather
/// than deadlock); fills `ids` and answers what to cache once the batch commits.
pub async fn fetch(
    tx: &Transaction<'_>,
    parsed: Parsed,
    ids: &mut BatchIds,
) -> Result<Learnt, Error> {
    let mut learnt = Learnt::default();
    if !parsed.sources.is_empty() {
        let mut sources: Vec<Source> = parsed.sources.into_iter().collect();
        sources.sort_unstable_by(|a, b| source_key(a).cmp(&source_key(b)));
        learnt.sources = source_ids(tx, &sources).await?;
        ids.sources
            .extend(learnt.sources.iter().map(|(k, v)| (k.clone(), *v)));
    }
    let mut device_ids: HashMap<Device, i16> = HashMap::new();
    if !parsed.devices.is_empty() {
        let mut devices: Vec<Device> = parsed.devices.into_iter().collect();
        devices.sort_unstable_by(|a, b| device_key(a).cmp(&device_key(b)));
        device_ids = devices_ids(tx, &devices).await?;
    }
    for (ua, device) in parsed.agents {
        let id = match device_ids.get(&device) {
            Some(&id) => id,
            // Known to the cache (look_devices filled ids already).
            None => match ids.agent_devices.get(&ua) {
                Some(&id) => id,
                None => continue,
            },
        };
        ids.agent_devices.insert(ua.clone(), id);
        learnt.agent_devices.insert(ua, id);
    }
    learnt.devices = device_ids;
    Ok(learnt)
}

fn source_key(s: &Source) -> (&str, &str, &str, &str) {
    (&s.referrer, &s.utm_source, &s.utm_medium, &s.utm_campaign)
}

fn device_key(d: &Device) -> (&str, &str, &str) {
    (&d.browser, &d.os, &d.device_type)
}

/// The ids of `sources` (sorted), inserting the missing ones.
async fn source_ids(
    tx: &Transaction<'_>,
    sources: &[Source],
) -> Result<HashMap<Source, i64>, Error> {
    let (mut r, mut s, mut m, mut c) = (vec![], vec![], vec![], vec![]);
    for src in sources {
        r.push(src.referrer.as_str());
        s.push(src.utm_source.as_str());
        m.push(src.utm_medium.as_str());
        c.push(src.utm_campaign.as_str());
    }
    let read = |row: &tokio_postgres::Row| {
        (
            Source {
                referrer: row.get(0),
                utm_source: row.get(1),
                utm_medium: row.get(2),
                utm_campaign: row.get(3),
            },
            row.get::<_, i64>(4),
        )
    };
    const SELECT: &str = "SELECT t.referrer, t.utm_source, t.utm_medium, t.utm_campaign, t.id
         FROM sources t JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[])
           AS v(referrer, utm_source, utm_medium, utm_campaign)
           USING (referrer, utm_source, utm_medium, utm_campaign)";
    let select = tx.prepare_cached(SELECT).await?;
    let mut found: HashMap<Source, i64> = tx
        .query(&select, &[&r, &s, &m, &c])
        .await?
        .iter()
        .map(read)
        .collect();
    if found.len() == sources.len() {
        return Ok(found);
    }
    let (mut r, mut s, mut m, mut c) = (vec![], vec![], vec![], vec![]);
    for src in sources.iter().filter(|src| !found.contains_key(*src)) {
        r.push(src.referrer.as_str());
        s.push(src.utm_source.as_str());
        m.push(src.utm_medium.as_str());
        c.push(src.utm_campaign.as_str());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO sources (referrer, utm_source, utm_medium, utm_campaign)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ORDER BY 1, 2, 3, 4
             ON CONFLICT DO NOTHING
             RETURNING referrer, utm_source, utm_medium, utm_campaign, id",
        )
        .await?;
    found.extend(tx.query(&insert, &[&r, &s, &m, &c]).await?.iter().map(read));
    if found.len() < sources.len() {
        // Inserted by another node's transaction that committed while ours waited on it: in
        // neither answer (the insert's snapshot predates it), visible to a new statement.
        found.extend(tx.query(&select, &[&r, &s, &m, &c]).await?.iter().map(read));
    }
    Ok(found)
}

/// The ids of `devices` (sorted), inserting the missing ones.
async fn devices_ids(
    tx: &Transaction<'_>,
    devices: &[Device],
) -> Result<HashMap<Device, i16>, Error> {
    let columns = |devices: &mut dyn Iterator<Item = &Device>| {
        let (mut b, mut o, mut t) = (vec![], vec![], vec![]);
        for d in devices {
            b.push(d.browser.clone());
            o.push(d.os.clone());
            t.push(d.device_type.clone());
        }
        (b, o, t)
    };
    let read = |row: &tokio_postgres::Row| {
        (
            Device {
                browser: row.get(0),
                os: row.get(1),
                device_type: row.get(2),
            },
            row.get::<_, i16>(3),
        )
    };
    let select = tx
        .prepare_cached(
            "SELECT t.browser, t.os, t.device_type, t.id
             FROM devices t JOIN unnest($1::text[], $2::text[], $3::text[])
               AS v(browser, os, device_type) USING (browser, os, device_type)",
        )
        .await?;
    let (b, o, t) = columns(&mut devices.iter());
    let mut found: HashMap<Device, i16> = tx
        .query(&select, &[&b, &o, &t])
        .await?
        .iter()
        .map(read)
        .collect();
    if found.len() == devices.len() {
        return Ok(found);
    }
    let (b, o, t) = columns(&mut devices.iter().filter(|d| !found.contains_key(*d)));
    let insert = tx
        .prepare_cached(
            "INSERT INTO devices (browser, os, device_type)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1, 2, 3
             ON CONFLICT DO NOTHING RETURNING browser, os, device_type, id",
        )
        .await?;
    found.extend(tx.query(&insert, &[&b, &o, &t]).await?.iter().map(read));
    if found.len() < devices.len() {
        found.extend(tx.query(&select, &[&b, &o, &t]).await?.iter().map(read));
    }
    Ok(found)
}
