//! Decoded records reused while their row is byte-for-byte unchanged.
//!
//! Decoding a user row builds some thirty owned strings and timestamps; on the session-verify
//! path (one joined read of a session and its user) that decoding was ≈ 9 % of the server's
//! CPU. The same few rows are read again and again, so each fast reader keeps the records it
//! decoded, keyed by the row's first column (its id), together with the exact bytes of every
//! column they came from. A read compares the row it just fetched with those bytes — no
//! allocation but one buffer — and hands out the kept record only when every column is equal;
//! any difference (any write to the row, whatever it changed) decodes afresh and replaces the
//! entry. So the answer is always the one decoding the current row would give: nothing can be
//! stale, there is nothing to invalidate, and a backend still only stores (the checks on the
//! record stay in sso-core).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use sso_core::StoreError;

/// Entries kept per cache; when a new key finds it full it is emptied and refills with the rows
/// in use. A user entry is ≈ 2 KiB (the row's bytes and the record), so a full user cache holds
/// ≈ 8 MiB; records of deleted rows leave with the next emptying.
const CAPACITY: usize = 4096;

/// One kept record and the column bytes it was decoded from.
struct Entry<T> {
    raw: Vec<u8>,
    record: Arc<T>,
}

/// Records of one table decoded from rows, keyed by the row's first column. Its `Debug` shows
/// only the number of entries: the records hold password hashes and encrypted keys.
pub(crate) struct RecordCache<T> {
    entries: Mutex<HashMap<Vec<u8>, Entry<T>>>,
}

impl<T> std::fmt::Debug for RecordCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("RecordCache").field("entries", &n).finish_non_exhaustive()
    }
}

impl<T> Default for RecordCache<T> {
    fn default() -> Self {
        RecordCache { entries: Mutex::new(HashMap::new()) }
    }
}

impl<T> RecordCache<T> {
    /// The record of the columns `cols` of `row` (the first of them its key): the kept one when
    /// those columns are byte-for-byte those it was decoded from, else `decode()`'s, kept.
    pub(crate) fn get_or_decode(
        &self,
        row: &rusqlite::Row<'_>,
        cols: Range<usize>,
        decode: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let key_end;
        let mut raw = Vec::with_capacity(1024);
        {
            let mut first = true;
            let mut end = 0;
            for i in cols {
                encode(&mut raw, row.get_ref(i).map_err(crate::fast_read::map_err)?);
                if first {
                    end = raw.len();
                    first = false;
                }
            }
            key_end = end;
        }
        let key = raw.get(..key_end).unwrap_or_default();
        if let Ok(entries) = self.entries.lock()
            && let Some(e) = entries.get(key)
            && e.raw == raw
        {
            return Ok(e.record.clone());
        }
        let record = Arc::new(decode()?);
        let key = key.to_vec();
        raw.shrink_to_fit();
        let mut dropped = None;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY && !entries.contains_key(&key) {
                dropped = Some(std::mem::take(&mut *entries));
            }
            entries.insert(key, Entry { raw, record: record.clone() });
        }
        // The emptied map is freed after the lock is released.
        drop(dropped);
        Ok(record)
    }

    /// Entries kept (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// Appends one column value, self-delimiting: a type tag, then the value (texts and blobs with
/// their length), so two rows encode equally only if every column is equal.
fn encode(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => {
            out.push(3);
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            out.extend_from_slice(t);
        }
        ValueRef::Blob(b) => {
            out.push(4);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT, b INTEGER, c BLOB); INSERT INTO t VALUES ('k', 'x', 1, NULL);")
            .unwrap();
        c
    }

    /// Reads row `k` through `cache`, counting decodes in `decodes`.
    fn read(c: &Connection, cache: &RecordCache<String>, decodes: &mut u32) -> Arc<String> {
        c.query_row("SELECT id, a, b, c FROM t WHERE id = 'k'", [], |row| {
            Ok(cache
                .get_or_decode(row, 0..4, || {
                    *decodes += 1;
                    Ok(format!("{}:{}", row.get::<_, String>(1).unwrap(), row.get::<_, i64>(2).unwrap()))
                })
                .unwrap())
        })
        .unwrap()
    }

    #[test]
    fn an_unchanged_row_is_decoded_once_and_any_change_decodes_again() {
        let c = db();
        let cache = RecordCache::default();
        let mut decodes = 0;
        let first = read(&c, &cache, &mut decodes);
        let second = read(&c, &cache, &mut decodes);
        assert_eq!((decodes, first.as_str()), (1, "x:1"));
        assert!(Arc::ptr_eq(&first, &second), "the kept record is handed out");
        // Each kind of change (text, integer, NULL to blob, and back to earlier bytes) is seen.
        for (stmt, want) in [
            ("UPDATE t SET a = 'y'", "y:1"),
            ("UPDATE t SET b = 2", "y:2"),
            ("UPDATE t SET c = x'00'", "y:2"),
            ("UPDATE t SET a = 'x', b = 1, c = NULL", "x:1"),
        ] {
            let before = decodes;
            c.execute(stmt, []).unwrap();
            assert_eq!(read(&c, &cache, &mut decodes).as_str(), want, "{stmt}");
            assert_eq!(decodes, before + 1, "{stmt} decodes afresh");
        }
        assert_eq!(cache.len(), 1, "one entry per key");
    }

    #[test]
    fn column_boundaries_count() {
        // 'ab' + '' and 'a' + 'b' must not encode alike.
        let (mut x, mut y) = (Vec::new(), Vec::new());
        encode(&mut x, ValueRef::Text(b"ab"));
        encode(&mut x, ValueRef::Text(b""));
        encode(&mut y, ValueRef::Text(b"a"));
        encode(&mut y, ValueRef::Text(b"b"));
        assert_ne!(x, y);
        let (mut n, mut e) = (Vec::new(), Vec::new());
        encode(&mut n, ValueRef::Null);
        encode(&mut e, ValueRef::Blob(b""));
        assert_ne!(n, e, "NULL is not an empty blob");
    }

    #[test]
    fn a_full_cache_empties_for_a_new_key_only() {
        let cache: RecordCache<u32> = RecordCache::default();
        let c = Connection::open_in_memory().unwrap();
        for i in 0..(CAPACITY + 1) {
            c.query_row("SELECT ?1", [i.to_string()], |row| {
                cache.get_or_decode(row, 0..1, || Ok(0)).unwrap();
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(cache.len(), 1);
        assert!(format!("{cache:?}").contains("entries: 1"), "Debug shows the count only");
    }

    #[test]
    fn a_full_cache_keeps_its_entries_when_a_kept_key_changes() {
        let cache: RecordCache<u32> = RecordCache::default();
        let c = Connection::open_in_memory().unwrap();
        for i in 0..CAPACITY {
            c.query_row("SELECT ?1", [i.to_string()], |row| {
                cache.get_or_decode(row, 0..1, || Ok(0)).unwrap();
                Ok(())
            })
            .unwrap();
        }
        // Key "0" with a second column: its bytes differ, it is replaced, nothing else goes.
        c.query_row("SELECT '0', 1", [], |row| {
            cache.get_or_decode(row, 0..2, || Ok(1)).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(cache.len(), CAPACITY);
    }
}
