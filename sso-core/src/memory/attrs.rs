//! Attribute semantics over one owner's map, shared by the memory user and session stores.

use std::collections::BTreeMap;

use crate::error::StoreError;
use crate::model::{AttrRecord, AttrWrite};
use crate::store::AttrEnvelope;
use crate::store::StoreResult;
use crate::time::Timestamp;

/// One owner's attributes.
pub(crate) type AttrMap = BTreeMap<String, AttrRecord>;

fn live<'a>(m: &'a AttrMap, name: &str, now: Timestamp) -> Option<&'a AttrRecord> {
    m.get(name).filter(|a| !a.is_expired(now))
}

pub(crate) fn create_many(m: &mut AttrMap, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
    if items.iter().any(|i| live(m, &i.name, now).is_some()) {
        return Err(StoreError::Conflict { what: "attr" });
    }
    for i in items {
        m.insert(
            i.name.clone(),
            AttrRecord {
                name: i.name.clone(),
                value: i.value.clone(),
                is_encrypted: i.is_encrypted,
                creation_time: now,
                last_modified: now,
                expiration_time: i.expiration_time.flatten(),
            },
        );
    }
    Ok(())
}

pub(crate) fn set_many(m: &mut AttrMap, items: &[AttrWrite], now: Timestamp) {
    for i in items {
        let creation_time = live(m, &i.name, now).map_or(now, |a| a.creation_time);
        m.insert(
            i.name.clone(),
            AttrRecord {
                name: i.name.clone(),
                value: i.value.clone(),
                is_encrypted: i.is_encrypted,
                creation_time,
                last_modified: now,
                expiration_time: i.expiration_time.flatten(),
            },
        );
    }
}

pub(crate) fn update_many(m: &mut AttrMap, items: &[AttrWrite], now: Timestamp) -> StoreResult<()> {
    if items.iter().any(|i| live(m, &i.name, now).is_none()) {
        return Err(StoreError::NotFound);
    }
    for i in items {
        if let Some(a) = m.get_mut(&i.name) {
            a.value = i.value.clone();
            a.is_encrypted = i.is_encrypted;
            a.last_modified = now;
            if let Some(e) = i.expiration_time {
                a.expiration_time = e;
            }
        }
    }
    Ok(())
}

pub(crate) fn get_many(m: &AttrMap, names: &[String], now: Timestamp) -> Vec<AttrRecord> {
    names.iter().filter_map(|n| live(m, n, now).cloned()).collect()
}

pub(crate) fn names(m: &AttrMap, now: Timestamp) -> Vec<String> {
    m.values().filter(|a| !a.is_expired(now)).map(|a| a.name.clone()).collect()
}

pub(crate) fn delete_many(m: &mut AttrMap, names: &[String], now: Timestamp) -> StoreResult<()> {
    if names.iter().any(|n| live(m, n, now).is_none()) {
        return Err(StoreError::NotFound);
    }
    for n in names {
        m.remove(n);
    }
    Ok(())
}

pub(crate) fn set_expiry_many(
    m: &mut AttrMap,
    items: &[(String, Option<Timestamp>)],
    now: Timestamp,
) -> StoreResult<()> {
    if items.iter().any(|(n, _)| live(m, n, now).is_none()) {
        return Err(StoreError::NotFound);
    }
    for (n, e) in items {
        if let Some(a) = m.get_mut(n) {
            a.expiration_time = *e;
            a.last_modified = now;
        }
    }
    Ok(())
}

/// Removes up to `limit` expired attributes; returns how many.
pub(crate) fn delete_expired(m: &mut AttrMap, now: Timestamp, limit: u64) -> u64 {
    let expired: Vec<String> = m
        .values()
        .filter(|a| a.is_expired(now))
        .map(|a| a.name.clone())
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    for n in &expired {
        m.remove(n);
    }
    expired.len() as u64
}

/// The encrypted attributes after `cursor` (`owner\tname`), in (owner, name) order.
pub(crate) fn scan<'a>(
    maps: impl Iterator<Item = (&'a str, &'a AttrMap)>,
    cursor: Option<String>,
    limit: u64,
) -> (Vec<AttrEnvelope>, Option<String>) {
    let after = cursor.as_deref().and_then(|c| c.split_once('\t')).map(|(o, n)| (o.to_owned(), n.to_owned()));
    let mut all: Vec<AttrEnvelope> = maps
        .flat_map(|(owner, m)| {
            m.values().filter(|a| a.is_encrypted).map(move |a| AttrEnvelope {
                owner: owner.to_owned(),
                name: a.name.clone(),
                value: a.value.clone(),
            })
        })
        .filter(|e| after.as_ref().is_none_or(|(o, n)| (e.owner.as_str(), e.name.as_str()) > (o.as_str(), n.as_str())))
        .collect();
    all.sort_by(|a, b| (a.owner.as_str(), a.name.as_str()).cmp(&(b.owner.as_str(), b.name.as_str())));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = all.len() > limit;
    all.truncate(limit);
    let next = if more { all.last().map(|e| format!("{}\t{}", e.owner, e.name)) } else { None };
    (all, next)
}

/// Compare-and-set of an attribute's stored value.
pub(crate) fn replace(m: &mut AttrMap, name: &str, old: &str, new: &str) -> bool {
    match m.get_mut(name) {
        Some(a) if a.value == old => {
            new.clone_into(&mut a.value);
            a.is_encrypted = true;
            true
        }
        _ => false,
    }
}
