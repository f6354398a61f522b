//! A compact string-keyed hash table for the matcher: every record (a small header, the display
//! form, and the key when it is not a suffix of the display form) lives in one byte arena, and
//! the open-addressing index holds the 32-bit arena offset of each record and 8 bits of its
//! hash. About 40 bytes per entry at 1M emails of ~26 characters (26 of them the entry itself), against ~66 for
//! fixed-size records with separate string ranges and ~90 for a `HashMap<Box<str>, _>`.
//!
//! Record layout, at a 4-byte aligned offset (so offsets fit 16 GiB of arena in a `u32`):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | display length |
//! | 1 | key length |
//! | 1 | flags: namespace (bits 0–1), removed (bit 2), key stored separately (bit 3) |
//! | 1 | source index (`u8`; see [`Table::insert`]) |
//! | 4 | line (little endian; [`NO_LINE`] for none) |
//! | n | display form, then the key when it is not the display form's suffix; padding |

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// Key namespaces: one table serves exact identifiers, domains and subdomain suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ns {
    Exact = 0,
    Domain = 1,
    Subdomains = 2,
}

impl Ns {
    fn from_bits(b: u8) -> Ns {
        match b & 3 {
            1 => Ns::Domain,
            2 => Ns::Subdomains,
            _ => Ns::Exact,
        }
    }
}

/// One record, decoded from the arena.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rec {
    /// Byte offset of the record's header.
    off: usize,
    disp_len: usize,
    key_len: usize,
    /// The key follows the display form instead of being its suffix.
    key_apart: bool,
    pub(crate) ns: Ns,
    pub(crate) source: u32,
    pub(crate) line: u32,
}

impl Rec {
    fn disp_range(&self) -> std::ops::Range<usize> {
        let start = self.off + HEADER;
        start..start + self.disp_len
    }

    fn key_range(&self) -> std::ops::Range<usize> {
        let d = self.disp_range();
        if self.key_apart {
            d.end..d.end + self.key_len
        } else {
            d.end - self.key_len..d.end
        }
    }

    /// Bytes the record takes in the arena, padding included.
    fn size(&self) -> usize {
        let body = self.disp_len + if self.key_apart { self.key_len } else { 0 };
        (HEADER + body).next_multiple_of(ALIGN)
    }
}

/// Line number stored for "no line".
pub(crate) const NO_LINE: u32 = u32::MAX;

/// Most distinct sources one table can name (the source index is one byte).
pub(crate) const MAX_SOURCES: usize = 256;

const HEADER: usize = 8;
const ALIGN: usize = 4;
const FLAG_REMOVED: u8 = 1 << 2;
const FLAG_KEY_APART: u8 = 1 << 3;
/// An empty index slot. Offsets are stored divided by [`ALIGN`], plus one.
const EMPTY: u32 = 0;

/// An index slot: the record's `offset / ALIGN + 1` (little endian; [`EMPTY`] for none) and
/// 8 bits of its key's hash, so a probe reads the arena only for a likely match.
type Slot = [u8; 5];

fn slot(off: u32, tag: u8) -> Slot {
    let [a, b, c, d] = off.to_le_bytes();
    [a, b, c, d, tag]
}

fn slot_off(s: &Slot) -> u32 {
    let [a, b, c, d, _] = *s;
    u32::from_le_bytes([a, b, c, d])
}

fn tag(h: u64) -> u8 {
    (h >> 56) as u8
}
const MIN_SLOTS: usize = 16;

#[derive(Clone, Debug)]
pub(crate) struct Table {
    arena: Vec<u8>,
    /// Records not removed.
    live: usize,
    /// Arena bytes held by removed records (reclaimed by [`Table::compact`]).
    dead: usize,
    /// Length is a power of two, at most half full.
    slots: Vec<Slot>,
}

/// The hash a key is indexed by (for [`Table::insert_hashed`]).
pub(crate) fn hash(ns: Ns, key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write_u8(ns as u8);
    h.write(key);
    h.finish()
}

/// The slot a hash starts probing at: the high bits (FxHash's low bits are weak for short
/// keys).
fn home(h: u64, mask: usize) -> usize {
    ((h >> 32) as usize ^ (h as usize)) & mask
}

impl Default for Table {
    fn default() -> Self {
        Table {
            arena: Vec::new(),
            live: 0,
            dead: 0,
            slots: vec![Slot::default(); MIN_SLOTS],
        }
    }
}

impl Table {
    /// An empty table with room for `entries` records holding about `bytes` bytes of text
    /// without growing (the index is sized up front, so building never rehashes; unused arena
    /// capacity is never touched, so it costs no resident memory).
    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> Table {
        let slots = entries
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(MIN_SLOTS)
            .max(MIN_SLOTS);
        Table {
            arena: Vec::with_capacity(bytes.saturating_add(entries.saturating_mul(HEADER + ALIGN))),
            live: 0,
            dead: 0,
            slots: vec![Slot::default(); slots],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// The record at arena offset `off`.
    fn rec(&self, off: usize) -> Option<Rec> {
        let h = self.arena.get(off..off + HEADER)?;
        let (&[disp_len, key_len, flags, source], line) = h.split_first_chunk::<4>()?;
        let line = u32::from_le_bytes(line.try_into().ok()?);
        let r = Rec {
            off,
            disp_len: usize::from(disp_len),
            key_len: usize::from(key_len),
            key_apart: flags & FLAG_KEY_APART != 0,
            ns: Ns::from_bits(flags),
            source: u32::from(source),
            line,
        };
        (flags & FLAG_REMOVED == 0).then_some(r)
    }

    fn rec_at_slot(&self, slot: u32) -> Option<Rec> {
        let off = (slot.checked_sub(1)? as usize) * ALIGN;
        self.rec(off)
    }

    /// Live records in insertion order.
    pub(crate) fn recs(&self) -> impl Iterator<Item = Rec> + '_ {
        let mut off = 0;
        std::iter::from_fn(move || {
            loop {
                let h = self.arena.get(off..off + HEADER)?;
                let (disp_len, key_len, flags) = (
                    usize::from(*h.first()?),
                    usize::from(*h.get(1)?),
                    *h.get(2)?,
                );
                let at = off;
                let body = disp_len
                    + if flags & FLAG_KEY_APART != 0 {
                        key_len
                    } else {
                        0
                    };
                off += (HEADER + body).next_multiple_of(ALIGN);
                if let Some(r) = self.rec(at) {
                    return Some(r);
                }
            }
        })
    }

    pub(crate) fn display<'a>(&'a self, r: &Rec) -> &'a str {
        self.arena
            .get(r.disp_range())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn key<'a>(&'a self, r: &Rec) -> &'a [u8] {
        self.arena.get(r.key_range()).unwrap_or_default()
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `(ns, key)`, and its record.
    fn find(&self, ns: Ns, key: &[u8]) -> Option<(usize, Rec)> {
        let mask = self.mask();
        let h = hash(ns, key);
        let t = tag(h);
        let mut i = home(h, mask);
        // At most half the slots are used, so the probe always reaches an empty slot; the
        // bound only guards against a bug turning into a hang.
        for _ in 0..self.slots.len() {
            let s = self.slots.get(i)?;
            let off = slot_off(s);
            if off == EMPTY {
                return None;
            }
            if s[4] == t
                && let Some(r) = self.rec_at_slot(off)
                && r.ns == ns
                && r.key_len == key.len()
                && self.key(&r) == key
            {
                return Some((i, r));
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The record stored under `(ns, key)`.
    #[inline]
    pub(crate) fn get(&self, ns: Ns, key: &str) -> Option<Rec> {
        self.find(ns, key.as_bytes()).map(|(_, r)| r)
    }

    /// Removes the record stored under `(ns, key)`; false when there is none. The slot is
    /// freed by backward-shift deletion (linear probing stays tombstone-free); the record is
    /// marked removed and its bytes are reclaimed once removed records hold half the arena.
    pub(crate) fn remove(&mut self, ns: Ns, key: &str) -> bool {
        let Some((i, r)) = self.find(ns, key.as_bytes()) else {
            return false;
        };
        if let Some(flags) = self.arena.get_mut(r.off + 2) {
            *flags |= FLAG_REMOVED;
        }
        self.live = self.live.saturating_sub(1);
        self.dead += r.size();
        let mask = self.mask();
        // Backward-shift: move later entries of the probe run into the hole when their home
        // slot allows it.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let Some(&s) = self.slots.get(j) else { break };
            if slot_off(&s) == EMPTY {
                break;
            }
            let home = self.home_of(slot_off(&s));
            let movable = if hole <= j {
                home <= hole || home > j
            } else {
                home <= hole && home > j
            };
            if movable {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = Slot::default();
        }
        if self.dead > 4096 && self.dead * 2 > self.arena.len() {
            self.compact();
        }
        true
    }

    /// The home slot of an occupied slot value. A removed record is never in the index.
    fn home_of(&self, slot: u32) -> usize {
        match self.rec_at_slot(slot) {
            Some(r) => home(hash(r.ns, self.key(&r)), self.mask()),
            None => 0,
        }
    }

    /// Insert unless `(ns, key)` is present. `key` is stored as a suffix of `display` when it
    /// is one, else after it. Returns false for a duplicate, and when the record does not fit
    /// the format: a key or display form over 255 bytes (longer than any identifier), a
    /// source index of 256 or more (a table holds one source per list file, the config or the
    /// store), or over 16 GiB of arena.
    pub(crate) fn insert(
        &mut self,
        ns: Ns,
        key: &str,
        display: &str,
        source: u32,
        line: u32,
    ) -> bool {
        self.insert_hashed(ns, key, display, source, line, hash(ns, key.as_bytes()))
    }

    /// Loads the slots the keys with hashes `hs` start probing at, so that they are in cache by
    /// the time those keys are inserted: a caller inserting a run of pre-hashed keys touches a
    /// batch before inserting it, and the batch's cache misses overlap (the loads are
    /// independent, so the CPU issues them all at once) instead of coming one at a time.
    #[inline]
    pub(crate) fn touch(&self, hs: impl Iterator<Item = u64>) {
        let mask = self.mask();
        let seen = hs.fold(0u8, |acc, h| {
            acc ^ self.slots.get(home(h, mask)).map_or(0, |s| s[4])
        });
        std::hint::black_box(seen);
    }

    /// [`Table::insert`] with the key's [`hash`] computed by the caller (possibly on another
    /// thread). One probe run finds a duplicate or the free slot the record goes to.
    pub(crate) fn insert_hashed(
        &mut self,
        ns: Ns,
        key: &str,
        display: &str,
        source: u32,
        line: u32,
        h: u64,
    ) -> bool {
        let (Ok(disp_len), Ok(key_len), Ok(source)) = (
            u8::try_from(display.len()),
            u8::try_from(key.len()),
            u8::try_from(source),
        ) else {
            return false;
        };
        let mask = self.mask();
        let t = tag(h);
        let mut i = home(h, mask);
        let mut free = None;
        for _ in 0..self.slots.len() {
            let Some(s) = self.slots.get(i) else { break };
            let off = slot_off(s);
            if off == EMPTY {
                free = Some(i);
                break;
            }
            if s[4] == t
                && let Some(r) = self.rec_at_slot(off)
                && r.ns == ns
                && r.key_len == key.len()
                && self.key(&r) == key.as_bytes()
            {
                return false;
            }
            i = (i + 1) & mask;
        }
        // At most half the slots are used, so there always is a free one.
        let Some(free) = free else { return false };
        let off = self.arena.len();
        let Ok(slot) = u32::try_from(off / ALIGN + 1) else {
            return false;
        };
        let apart = !display.ends_with(key);
        let flags = ns as u8 | if apart { FLAG_KEY_APART } else { 0 };
        self.arena
            .extend_from_slice(&[disp_len, key_len, flags, source]);
        self.arena.extend_from_slice(&line.to_le_bytes());
        self.arena.extend_from_slice(display.as_bytes());
        if apart {
            self.arena.extend_from_slice(key.as_bytes());
        }
        self.arena
            .resize(self.arena.len().next_multiple_of(ALIGN), 0);
        self.live += 1;
        if self.live * 2 > self.slots.len() {
            self.rehash(self.slots.len() * 2);
        } else if let Some(s) = self.slots.get_mut(free) {
            *s = self::slot(slot, t);
        }
        true
    }

    fn place(&mut self, off: u32, h: u64) {
        let mask = self.mask();
        let mut i = home(h, mask);
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(i) {
                Some(s) if slot_off(s) == EMPTY => {
                    *s = slot(off, tag(h));
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                None => return,
            }
        }
    }

    fn rehash(&mut self, slots: usize) {
        self.slots = Vec::new();
        self.slots = vec![Slot::default(); slots.max(MIN_SLOTS)];
        let mut off = 0;
        while let Some(h) = self.arena.get(off..off + HEADER) {
            let (disp_len, key_len, flags) = match h {
                [d, k, f, ..] => (usize::from(*d), usize::from(*k), *f),
                _ => break,
            };
            let size = (HEADER
                + disp_len
                + if flags & FLAG_KEY_APART != 0 {
                    key_len
                } else {
                    0
                })
            .next_multiple_of(ALIGN);
            if let Some(r) = self.rec(off)
                && let Ok(slot) = u32::try_from(off / ALIGN + 1)
            {
                let h = hash(r.ns, self.key(&r));
                self.place(slot, h);
            }
            off += size;
        }
    }

    /// Rewrites the arena without removed records, and the index with it.
    fn compact(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.dead);
        for r in self.recs() {
            if let Some(bytes) = self.arena.get(r.off..r.off + r.size()) {
                arena.extend_from_slice(bytes);
            }
        }
        self.arena = arena;
        self.dead = 0;
        self.rehash(self.slots.len());
    }

    /// Release spare capacity once building is done.
    pub(crate) fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        // A capacity hint larger than what arrived (blank lines, duplicates): right-size.
        let fit = (self.live * 2).next_power_of_two().max(MIN_SLOTS);
        if fit < self.slots.len() {
            self.rehash(fit);
        }
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
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
                (r.line, r.source, t.display(&r)),
                (i, i % 3, format!("*@d{i}.com").as_str())
            );
        }
        assert!(t.get(Ns::Domain, "d10000.com").is_none());
        assert!(t.get(Ns::Subdomains, "d1.com").is_none());
        assert_eq!(t.display(&t.get(Ns::Exact, "d7.com").unwrap()), "d7.com");
        // Key not a suffix of the display form: stored separately.
        assert!(t.insert(Ns::Exact, "a@x.com", "a+b@x.com", 0, NO_LINE));
        let r = t.get(Ns::Exact, "a@x.com").unwrap();
        assert_eq!((t.display(&r), r.line), ("a+b@x.com", NO_LINE));
        assert!(t.get(Ns::Exact, "a+b@x.com").is_none());
        let order: Vec<String> = t.recs().map(|r| t.display(&r).to_owned()).collect();
        assert_eq!(order.len(), 10_002);
        assert_eq!(order[0], "*@d0.com");
        assert_eq!(order[10_001], "a+b@x.com");
    }

    #[test]
    fn oversized_records_and_sources_are_refused() {
        let mut t = Table::default();
        let long = "a".repeat(256);
        assert!(!t.insert(Ns::Exact, &long, &long, 0, 1));
        assert!(!t.insert(Ns::Exact, "k", "k", MAX_SOURCES as u32, 1));
        assert!(t.insert(Ns::Exact, "k", "k", MAX_SOURCES as u32 - 1, 1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn removal_keeps_the_rest_findable_and_compacts() {
        let mut t = Table::default();
        for i in 0..20_000u32 {
            let k = format!("user{i}@x.com");
            let d = if i % 5 == 0 {
                format!("user{i}+t@x.com")
            } else {
                k.clone()
            };
            assert!(t.insert(Ns::Exact, &k, &d, 0, i));
        }
        for i in (0..20_000u32).filter(|i| i % 4 != 3) {
            assert!(t.remove(Ns::Exact, &format!("user{i}@x.com")));
            assert!(!t.remove(Ns::Exact, &format!("user{i}@x.com")));
        }
        assert_eq!(t.len(), 5_000);
        assert!(t.dead * 2 <= t.arena.len() + 4096, "compacted");
        for i in 0..20_000u32 {
            let r = t.get(Ns::Exact, &format!("user{i}@x.com"));
            assert_eq!(r.is_some(), i % 4 == 3, "{i}");
            if let Some(r) = r {
                assert_eq!(r.line, i);
            }
        }
        assert_eq!(t.recs().count(), 5_000);
        assert!(t.insert(Ns::Exact, "user0@x.com", "user0@x.com", 0, 0));
    }

    #[test]
    fn empty_table_misses() {
        let t = Table::default();
        assert!(t.get(Ns::Exact, "").is_none());
        assert!(t.get(Ns::Exact, "x").is_none());
    }
}
