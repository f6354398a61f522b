//! A compact string-keyed hash table for the matcher: all key and display strings live in
//! one arena, records are fixed-size, and the open-addressing index holds a 32-bit hash tag
//! plus a record number per slot. About 45–60 bytes per entry at 1M entries, against ~90 for
//! a `HashMap<Box<str>, _>`.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// Key namespaces: one table serves exact identifiers, domains and subdomain suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ns {
    Exact = 0,
    Domain = 1,
    Subdomains = 2,
    /// A removed record: no slot points at it any more.
    Removed = 3,
}

/// One entry. Strings are ranges of the arena; the key may share bytes with the display form.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rec {
    disp_off: u32,
    key_off: u32,
    disp_len: u16,
    key_len: u16,
    pub(crate) ns: Ns,
    pub(crate) source: u32,
    pub(crate) line: u32,
}

/// Line number stored for "no line".
pub(crate) const NO_LINE: u32 = u32::MAX;

const EMPTY: u64 = 0;
const MIN_SLOTS: usize = 16;

#[derive(Clone, Debug)]
pub(crate) struct Table {
    arena: String,
    recs: Vec<Rec>,
    /// Records not removed.
    live: usize,
    /// `(tag << 32) | (record + 1)`, or `EMPTY`. Length is a power of two, at most half full.
    slots: Vec<u64>,
}

fn hash(ns: Ns, key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write_u8(ns as u8);
    h.write(key);
    h.finish()
}

impl Default for Table {
    fn default() -> Self {
        Table {
            arena: String::new(),
            recs: Vec::new(),
            live: 0,
            slots: vec![EMPTY; MIN_SLOTS],
        }
    }
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Live records in insertion order.
    pub(crate) fn recs(&self) -> impl Iterator<Item = &Rec> + '_ {
        self.recs.iter().filter(|r| r.ns != Ns::Removed)
    }

    /// Removes the record stored under `(ns, key)`; false when there is none. The slot is
    /// freed by backward-shift deletion (linear probing stays tombstone-free); the record's
    /// strings stay in the arena until the table is rebuilt.
    pub(crate) fn remove(&mut self, ns: Ns, key: &str) -> bool {
        let h = hash(ns, key.as_bytes());
        let tag = h >> 32;
        let mask = self.mask();
        let mut i = (h as usize) & mask;
        let mut found = None;
        for _ in 0..self.slots.len() {
            let Some(&s) = self.slots.get(i) else {
                return false;
            };
            if s == EMPTY {
                return false;
            }
            if s >> 32 == tag {
                let idx = ((s & 0xFFFF_FFFF) - 1) as usize;
                if let Some(r) = self.recs.get(idx)
                    && r.ns == ns
                    && self.key(r) == key.as_bytes()
                {
                    found = Some(idx);
                    break;
                }
            }
            i = (i + 1) & mask;
        }
        let Some(idx) = found else { return false };
        if let Some(r) = self.recs.get_mut(idx) {
            r.ns = Ns::Removed;
        }
        self.live = self.live.saturating_sub(1);
        // Backward-shift: move later entries of the probe run into the hole when their home
        // slot allows it.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some(&s) = self.slots.get(j) else { break };
            if s == EMPTY {
                break;
            }
            let home = self.home(s) & mask;
            let movable = if hole <= j {
                home <= hole || home > j
            } else {
                home <= hole && home > j
            };
            if movable {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        true
    }

    /// The home slot of an occupied slot value.
    fn home(&self, slot: u64) -> usize {
        match self.recs.get(((slot & 0xFFFF_FFFF) - 1) as usize) {
            Some(r) => hash(r.ns, self.key(r)) as usize,
            None => 0,
        }
    }

    pub(crate) fn display(&self, r: &Rec) -> &str {
        let start = r.disp_off as usize;
        self.arena
            .get(start..start + usize::from(r.disp_len))
            .unwrap_or_default()
    }

    fn key(&self, r: &Rec) -> &[u8] {
        let start = r.key_off as usize;
        self.arena
            .as_bytes()
            .get(start..start + usize::from(r.key_len))
            .unwrap_or_default()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The record stored under `(ns, key)`.
    #[inline]
    pub(crate) fn get(&self, ns: Ns, key: &str) -> Option<&Rec> {
        let key = key.as_bytes();
        let h = hash(ns, key);
        let tag = h >> 32;
        let mask = self.mask();
        let mut i = (h as usize) & mask;
        // At most half the slots are used, so the probe always reaches an empty slot; the
        // bound only guards against a bug turning into a hang.
        for _ in 0..self.slots.len() {
            let s = *self.slots.get(i)?;
            if s == EMPTY {
                return None;
            }
            if s >> 32 == tag {
                let r = self.recs.get(((s & 0xFFFF_FFFF) - 1) as usize)?;
                if r.ns == ns && self.key(r) == key {
                    return Some(r);
                }
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Insert unless `(ns, key)` is present. `key` is stored as a suffix of `display` when it
    /// is one, else after it. Returns false for a duplicate, or when the table is full (over
    /// 4 GiB of strings or 2^31 entries, far beyond any configured limit).
    pub(crate) fn insert(
        &mut self,
        ns: Ns,
        key: &str,
        display: &str,
        source: u32,
        line: u32,
    ) -> bool {
        if self.get(ns, key).is_some() {
            return false;
        }
        let (Ok(disp_len), Ok(key_len)) = (u16::try_from(display.len()), u16::try_from(key.len()))
        else {
            return false;
        };
        let shared = display.ends_with(key);
        let extra = if shared { 0 } else { key.len() };
        let Ok(disp_off) = u32::try_from(self.arena.len()) else {
            return false;
        };
        if self.arena.len() + display.len() + extra > u32::MAX as usize
            || self.recs.len() >= (u32::MAX / 2) as usize
        {
            return false;
        }
        self.arena.push_str(display);
        let key_off = if shared {
            disp_off + u32::from(disp_len) - u32::from(key_len)
        } else {
            self.arena.push_str(key);
            disp_off + u32::from(disp_len)
        };
        self.live += 1;
        self.recs.push(Rec {
            disp_off,
            key_off,
            disp_len,
            key_len,
            ns,
            source,
            line,
        });
        if self.live * 2 > self.slots.len() {
            self.rehash(self.slots.len() * 2);
        } else {
            self.place(self.recs.len() - 1);
        }
        true
    }

    fn place(&mut self, idx: usize) {
        let Some(r) = self.recs.get(idx) else { return };
        let h = hash(r.ns, self.key(r));
        let mask = self.mask();
        let mut i = (h as usize) & mask;
        let val = ((h >> 32) << 32) | (idx as u64 + 1);
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(i) {
                Some(s) if *s == EMPTY => {
                    *s = val;
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                None => return,
            }
        }
    }

    fn rehash(&mut self, slots: usize) {
        self.slots = vec![EMPTY; slots.max(MIN_SLOTS)];
        for idx in 0..self.recs.len() {
            if self.recs.get(idx).is_some_and(|r| r.ns != Ns::Removed) {
                self.place(idx);
            }
        }
    }

    /// Release spare capacity once building is done.
    pub(crate) fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.recs.shrink_to_fit();
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.recs.capacity() * std::mem::size_of::<Rec>()
            + self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_dedup_grow() {
        let mut t = Table::default();
        for i in 0..10_000u32 {
            let d = format!("*@d{i}.com");
            assert!(t.insert(Ns::Domain, &d[2..], &d, i % 3, i));
        }
        assert!(
            !t.insert(Ns::Domain, "d7.com", "*@d7.com", 9, 9),
            "duplicate kept"
        );
        assert!(
            t.insert(Ns::Exact, "d7.com", "d7.com", 9, 9),
            "other namespace"
        );
        assert_eq!(t.len(), 10_001);
        for i in 0..10_000u32 {
            let r = t.get(Ns::Domain, &format!("d{i}.com")).unwrap();
            assert_eq!(
                (r.line, r.source, t.display(r)),
                (i, i % 3, format!("*@d{i}.com").as_str())
            );
        }
        assert!(t.get(Ns::Domain, "d10000.com").is_none());
        assert!(t.get(Ns::Subdomains, "d1.com").is_none());
        assert_eq!(t.display(t.get(Ns::Exact, "d7.com").unwrap()), "d7.com");
        // Key not a suffix of the display form: stored separately.
        assert!(t.insert(Ns::Exact, "a@x.com", "a+b@x.com", 0, NO_LINE));
        let r = t.get(Ns::Exact, "a@x.com").unwrap();
        assert_eq!(t.display(r), "a+b@x.com");
        assert!(t.get(Ns::Exact, "a+b@x.com").is_none());
    }

    #[test]
    fn empty_table_misses() {
        let t = Table::default();
        assert!(t.get(Ns::Exact, "").is_none());
        assert!(t.get(Ns::Exact, "x").is_none());
    }
}
