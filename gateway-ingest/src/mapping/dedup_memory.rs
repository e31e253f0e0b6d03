//! The mapping stage's dedup memory: which message identities were seen
//! within their window, held in a byte budget instead of a key count.
//!
//! A key is a [`DedupKey`] (128 bits of SHA-256 over mapping, device and
//! value, computed by the stage) plus its [`KeyForm`]:
//!
//! - [`KeyForm::Ordered`]: the value grows per (mapping, device) stream
//!   (payload timestamp in ms, integer sequence number, LoRaWAN fCnt within
//!   one (devEui, epoch)). Settled ordered keys are stored per stream in
//!   chunks of at most [`CHUNK_BYTES`] bytes: each key is two zig-zag LEB128
//!   varints, the value's and the expiry's difference to the previous key of
//!   the chunk (wrapping `u64` arithmetic, so any order round-trips). A
//!   device publishing every 5 ms costs 2 bytes a key, every second 4 bytes,
//!   instead of the ~80 bytes of a hash-map entry with its order queue.
//! - [`KeyForm::Exact`]: anything else (payload hashes, string or
//!   non-integer sequences): the 16-byte key itself, in a hash map with an
//!   expiry queue.
//!
//! Invariants (held by the property tests below against a plain model):
//! - a key is *pending* from [`DedupMemory::insert_pending`] until
//!   [`DedupMemory::settle`]: a pending key is never dropped, neither for
//!   the budget nor for its window (its write is in flight; a duplicate
//!   waits for it);
//! - a settled key is answered [`Seen::Stored`] until its expiry
//!   (`expires_ms > now_ms`) unless it was dropped for the budget; an
//!   expired key, a key never inserted and a key settled as not stored are
//!   never answered as seen (no new message is refused);
//! - when the estimated size ([`DedupMemoryStats::used_bytes`]) exceeds the
//!   budget after an insertion or a settle, settled keys are dropped, those nearest to
//!   expiry first (for one window: the oldest), an exact key or a whole
//!   chunk at a time, until it fits; every dropped key is counted
//!   ([`DedupMemoryStats::dropped_keys`]). A duplicate of a dropped key is
//!   stored again: that is the cost of the budget, and it is visible;
//! - the size is an estimate from entry counts and the sizes of the types
//!   (hash-map entries at their maximum load factor, chunk buffers at their
//!   capacity), not the allocator's figure.

use mrv_shared::wire::varint;
use std::collections::{HashMap, VecDeque};
use std::mem::size_of;

/// Default budget: 1 MiB (`mqtt.mapping_dedup_memory_bytes`).
pub const DEFAULT_BUDGET_BYTES: usize = 1 << 20;

/// Bytes of one chunk's key buffer (allocated at once, never grown).
pub const CHUNK_BYTES: usize = 512;

/// The full stream sweep runs at most this often (per `now_ms`).
const SWEEP_EVERY_MS: u64 = 1_000;

/// A remembered message identity: 128 bits of a digest over (mapping,
/// device, value); two distinct identities collide with probability
/// ~2^-128 per pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey([u64; 2]);

/// A (mapping, device[, devEui, epoch], key kind) stream of ordered keys,
/// as 128 bits of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId([u64; 2]);

fn words(digest: &[u8]) -> [u64; 2] {
    let word = |i: usize| {
        u64::from_le_bytes(
            digest[i * 8..i * 8 + 8]
                .try_into()
                .expect("a digest of at least 16 bytes"),
        )
    };
    [word(0), word(1)]
}

impl DedupKey {
    /// The first 16 bytes of `digest` (at least 16 bytes long).
    pub fn from_digest(digest: &[u8]) -> Self {
        DedupKey(words(digest))
    }
}

impl StreamId {
    /// The first 16 bytes of `digest` (at least 16 bytes long).
    pub fn from_digest(digest: &[u8]) -> Self {
        StreamId(words(digest))
    }
}

/// How a key is kept once settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// `value` in the per-device stream `stream` (delta-encoded).
    Ordered {
        /// The stream.
        stream: StreamId,
        /// The value (timestamp ms, sequence number, fCnt).
        value: u64,
    },
    /// The key itself.
    Exact,
}

/// What the memory knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Its first copy's write has not answered yet.
    Pending,
    /// Its first copy is stored.
    Stored,
}

/// Figures for diagnostics (`/api/status`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DedupMemoryStats {
    /// Estimated bytes held.
    pub used_bytes: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// Keys remembered (pending and settled).
    pub keys: u64,
    /// Keys pending (never dropped).
    pub pending_keys: u64,
    /// Settled keys dropped for the budget before their window ended, since
    /// start.
    pub dropped_keys: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    form: KeyForm,
    expires_ms: u64,
}

/// Up to [`CHUNK_BYTES`] of delta-encoded (value, expiry) pairs of one stream.
#[derive(Debug)]
struct Chunk {
    /// Value and expiry the first pair's deltas are taken from.
    base: (u64, u64),
    /// The last pair written (what the next delta is taken from).
    last: (u64, u64),
    min_value: u64,
    max_value: u64,
    min_expires: u64,
    max_expires: u64,
    keys: u32,
    bytes: Vec<u8>,
}

/// Longest encoding of one pair: two 10-byte varints.
const MAX_PAIR_BYTES: usize = 20;

impl Chunk {
    fn new(value: u64, expires_ms: u64) -> Self {
        Chunk {
            base: (value, expires_ms),
            last: (value, expires_ms),
            min_value: value,
            max_value: value,
            min_expires: expires_ms,
            max_expires: expires_ms,
            keys: 0,
            bytes: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn has_room(&self) -> bool {
        self.bytes.len() + MAX_PAIR_BYTES <= CHUNK_BYTES
    }

    fn push(&mut self, value: u64, expires_ms: u64) {
        varint::put_i64(&mut self.bytes, value.wrapping_sub(self.last.0) as i64);
        varint::put_i64(&mut self.bytes, expires_ms.wrapping_sub(self.last.1) as i64);
        self.last = (value, expires_ms);
        self.keys += 1;
        self.min_value = self.min_value.min(value);
        self.max_value = self.max_value.max(value);
        self.min_expires = self.min_expires.min(expires_ms);
        self.max_expires = self.max_expires.max(expires_ms);
    }

    /// True when `value` is in the chunk with an expiry after `now_ms`.
    fn holds(&self, value: u64, now_ms: u64) -> bool {
        if value < self.min_value || value > self.max_value || self.max_expires <= now_ms {
            return false;
        }
        let (mut v, mut e) = self.base;
        let mut at = 0;
        while at < self.bytes.len() {
            // The bytes are this chunk's own encoding (`push`): they always
            // decode; were one not to, the key is treated as not held.
            let (Ok(dv), Ok(de)) = (
                varint::get_i64(&self.bytes, &mut at, "dedup value"),
                varint::get_i64(&self.bytes, &mut at, "dedup expiry"),
            ) else {
                return false;
            };
            v = v.wrapping_add(dv as u64);
            e = e.wrapping_add(de as u64);
            if v == value && e > now_ms {
                return true;
            }
        }
        false
    }
}

/// Bytes a chunk costs: its struct in the stream's queue, its buffer and
/// the allocator's header for it.
const CHUNK_COST: usize = size_of::<Chunk>() + CHUNK_BYTES + 16;
/// Bytes a stream costs besides its chunks (map entry at 7/8 load).
const STREAM_COST: usize = (size_of::<(StreamId, VecDeque<Chunk>)>() + 1) * 8 / 7 + 16;
/// Bytes an exact key costs: map entry at 7/8 load plus its queue entry.
const EXACT_COST: usize = (size_of::<(DedupKey, u64)>() + 1) * 8 / 7 + size_of::<(u64, DedupKey)>();
/// Bytes a pending key costs (map entry at 7/8 load).
const PENDING_COST: usize = (size_of::<(DedupKey, Pending)>() + 1) * 8 / 7;

/// The dedup memory (see the module doc).
#[derive(Debug)]
pub struct DedupMemory {
    budget_bytes: usize,
    pending: HashMap<DedupKey, Pending>,
    exact: HashMap<DedupKey, u64>,
    /// Exact keys by expiry as inserted (entries whose expiry no longer
    /// matches the map are stale and skipped).
    exact_order: VecDeque<(u64, DedupKey)>,
    streams: HashMap<StreamId, VecDeque<Chunk>>,
    chunks: usize,
    stream_keys: u64,
    dropped_keys: u64,
    swept_ms: Option<u64>,
}

impl DedupMemory {
    /// An empty memory holding at most about `budget_bytes` of settled keys.
    pub fn new(budget_bytes: usize) -> Self {
        DedupMemory {
            budget_bytes,
            pending: HashMap::new(),
            exact: HashMap::new(),
            exact_order: VecDeque::new(),
            streams: HashMap::new(),
            chunks: 0,
            stream_keys: 0,
            dropped_keys: 0,
            swept_ms: None,
        }
    }

    /// What is known of `key` (of form `form`) at `now_ms`.
    pub fn lookup(&self, key: &DedupKey, form: &KeyForm, now_ms: u64) -> Option<Seen> {
        if self.pending.contains_key(key) {
            return Some(Seen::Pending);
        }
        let stored = match form {
            KeyForm::Exact => self.exact.get(key).is_some_and(|e| *e > now_ms),
            KeyForm::Ordered { stream, value } => self
                .streams
                .get(stream)
                .is_some_and(|s| s.iter().rev().any(|c| c.holds(*value, now_ms))),
        };
        stored.then_some(Seen::Stored)
    }

    /// Remembers a key whose frame is being written, until
    /// [`DedupMemory::settle`]; `expires_ms` is when its window ends.
    pub fn insert_pending(&mut self, key: DedupKey, form: KeyForm, expires_ms: u64) {
        self.pending.insert(key, Pending { form, expires_ms });
        self.fit_budget();
    }

    /// Drops settled keys until the estimate fits the budget (or nothing
    /// settled is left).
    fn fit_budget(&mut self) {
        while self.used_bytes() > self.budget_bytes && self.drop_nearest_expiry() {}
    }

    /// Settles a pending key: kept until its expiry when `stored` (then the
    /// budget is enforced), forgotten otherwise. Unknown keys are ignored.
    pub fn settle(&mut self, key: &DedupKey, stored: bool) {
        let Some(p) = self.pending.remove(key) else {
            return;
        };
        if !stored {
            return;
        }
        match p.form {
            KeyForm::Exact => {
                self.exact.insert(*key, p.expires_ms);
                self.exact_order.push_back((p.expires_ms, *key));
            }
            KeyForm::Ordered { stream, value } => {
                let chunks = self.streams.entry(stream).or_default();
                if !chunks.back().is_some_and(Chunk::has_room) {
                    chunks.push_back(Chunk::new(value, p.expires_ms));
                    self.chunks += 1;
                }
                chunks
                    .back_mut()
                    .expect("a chunk with room was just ensured")
                    .push(value, p.expires_ms);
                self.stream_keys += 1;
            }
        }
        self.fit_budget();
    }

    /// Forgets settled keys whose window ended at `now_ms`: exact keys at
    /// once, stream chunks whose every key expired at most once a second.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(t, k)) = self.exact_order.front() {
            if t > now_ms {
                break;
            }
            self.exact_order.pop_front();
            if self.exact.get(&k) == Some(&t) {
                self.exact.remove(&k);
            }
        }
        let due = self
            .swept_ms
            .is_none_or(|t| now_ms < t || now_ms - t >= SWEEP_EVERY_MS);
        if !due {
            return;
        }
        self.swept_ms = Some(now_ms);
        let (mut chunks, mut keys) = (0, 0u64);
        self.streams.retain(|_, s| {
            s.retain(|c| {
                let keep = c.max_expires > now_ms;
                if !keep {
                    chunks += 1;
                    keys += u64::from(c.keys);
                }
                keep
            });
            !s.is_empty()
        });
        self.chunks -= chunks;
        self.stream_keys -= keys;
    }

    /// Drops the settled key (or chunk of keys) nearest to expiry; false
    /// when nothing settled is left.
    fn drop_nearest_expiry(&mut self) -> bool {
        while let Some(&(t, k)) = self.exact_order.front() {
            if self.exact.get(&k) == Some(&t) {
                break;
            }
            self.exact_order.pop_front();
        }
        let exact = self.exact_order.front().map(|(t, _)| *t);
        let chunk = self
            .streams
            .iter()
            .filter_map(|(id, s)| s.front().map(|c| (c.min_expires, *id)))
            .min_by_key(|(t, _)| *t);
        let take_exact = match (exact, chunk) {
            (None, None) => return false,
            (Some(t), Some((ct, _))) => t <= ct,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if take_exact {
            let (_, k) = self.exact_order.pop_front().expect("front exists");
            self.exact.remove(&k);
            self.dropped_keys += 1;
        } else {
            let (_, id) = chunk.expect("no exact key: a chunk");
            let s = self.streams.get_mut(&id).expect("a stream just seen");
            let c = s.pop_front().expect("a front chunk just seen");
            if s.is_empty() {
                self.streams.remove(&id);
            }
            self.chunks -= 1;
            self.stream_keys -= u64::from(c.keys);
            self.dropped_keys += u64::from(c.keys);
        }
        true
    }

    fn used_bytes(&self) -> usize {
        self.pending.len() * PENDING_COST
            + self.exact.len() * EXACT_COST
            + self.streams.len() * STREAM_COST
            + self.chunks * CHUNK_COST
    }

    /// Keys remembered: pending and settled (including settled keys whose
    /// window ended but that were not swept yet).
    pub fn len(&self) -> usize {
        self.pending.len() + self.exact.len() + self.stream_keys as usize
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Figures for diagnostics.
    pub fn stats(&self) -> DedupMemoryStats {
        DedupMemoryStats {
            used_bytes: self.used_bytes() as u64,
            budget_bytes: self.budget_bytes as u64,
            keys: self.len() as u64,
            pending_keys: self.pending.len() as u64,
            dropped_keys: self.dropped_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(stream: u8, value: u64) -> (DedupKey, KeyForm) {
        let s = StreamId([u64::from(stream), 7]);
        (
            DedupKey([u64::from(stream), value]),
            if stream.is_multiple_of(3) {
                KeyForm::Exact
            } else {
                KeyForm::Ordered { stream: s, value }
            },
        )
    }

    #[test]
    fn varints_and_zigzag_round_trip_extremes() {
        for d in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            varint::put_i64(&mut b, d);
            assert!(b.len() <= MAX_PAIR_BYTES / 2, "{d}: {} bytes", b.len());
            let mut at = 0;
            assert_eq!(varint::get_i64(&b, &mut at, "test"), Ok(d));
            assert_eq!(at, b.len());
        }
    }

    #[test]
    fn a_timestamp_every_5_ms_costs_about_two_bytes() {
        let mut m = DedupMemory::new(usize::MAX);
        let n = 10_000u64;
        for i in 0..n {
            let (k, f) = key(1, 1_764_590_400_000 + i * 5);
            m.insert_pending(k, f, 600_000 + i * 5);
            m.settle(&k, true);
        }
        let chunk_bytes: usize = m.streams.values().flatten().map(|c| c.bytes.len()).sum();
        assert_eq!(chunk_bytes as u64, 2 * n);
        let per_key = m.stats().used_bytes / n;
        assert!(per_key <= 4, "{per_key} bytes a key with overhead");
        assert_eq!(m.len() as u64, n);
    }

    #[test]
    fn over_budget_the_nearest_expiry_goes_first_and_is_counted() {
        let mut m = DedupMemory::new(4 * CHUNK_COST + STREAM_COST);
        let mut i = 0u64;
        while m.stats().dropped_keys == 0 {
            let (k, f) = key(1, i);
            m.insert_pending(k, f, 1_000 + i);
            m.settle(&k, true);
            i += 1;
        }
        let s = m.stats();
        assert!(s.used_bytes <= s.budget_bytes, "{s:?}");
        let (k0, f0) = key(1, 0);
        assert_eq!(m.lookup(&k0, &f0, 0), None, "the oldest chunk went");
        let (kl, fl) = key(1, i - 1);
        assert_eq!(m.lookup(&kl, &fl, 0), Some(Seen::Stored));
        assert_eq!(s.dropped_keys + m.len() as u64, i);
    }

    #[test]
    fn pending_keys_outlive_the_budget_and_their_window() {
        let mut m = DedupMemory::new(0);
        let (k, f) = key(2, 9);
        m.insert_pending(k, f, 10);
        let (k2, f2) = key(3, 1);
        m.insert_pending(k2, f2, 10);
        m.settle(&k2, true);
        m.expire(1_000);
        assert_eq!(m.lookup(&k, &f, 1_000), Some(Seen::Pending));
        assert_eq!(m.lookup(&k2, &f2, 0), None, "settled and over budget");
        m.settle(&k, false);
        assert_eq!(m.lookup(&k, &f, 0), None);
        assert!(m.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A message with key (stream, value) arrives.
        Arrive(u8, u64),
        /// The oldest pending write answers.
        Settle(bool),
        /// Time passes.
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 0u64..400).prop_map(|(s, v)| Op::Arrive(s, v)),
            3 => any::<bool>().prop_map(Op::Settle),
            1 => (0u64..300).prop_map(Op::Wait),
        ]
    }

    const WINDOW: u64 = 1_000;

    /// Runs `ops` against the memory and a model without a budget: the
    /// memory answers as the model does, except that a stored key may be
    /// taken for new once for every key the memory says it dropped.
    fn run(ops: &[Op], budget: usize) -> Result<(), TestCaseError> {
        let mut m = DedupMemory::new(budget);
        // The model: key -> (expires, stored); pending writes in order.
        let mut model: HashMap<(u8, u64), (u64, bool)> = HashMap::new();
        let mut writes: VecDeque<(u8, u64)> = VecDeque::new();
        let mut taken_again = 0u64;
        let mut now = 0u64;
        for op in ops {
            match *op {
                Op::Arrive(s, v) => {
                    m.expire(now);
                    let (k, f) = key(s, v);
                    let seen = m.lookup(&k, &f, now);
                    let want = model
                        .get(&(s, v))
                        .filter(|(e, stored)| !stored || *e > now)
                        .map(|(_, stored)| if *stored { Seen::Stored } else { Seen::Pending });
                    match (seen, want) {
                        (a, b) if a == b => {}
                        // A stored key dropped for the budget: accepted
                        // again, and only because it was dropped.
                        (None, Some(Seen::Stored)) => {
                            taken_again += 1;
                            prop_assert!(
                                taken_again <= m.stats().dropped_keys,
                                "{s}/{v} forgotten but not dropped"
                            );
                        }
                        (a, b) => prop_assert!(false, "{a:?} for {s}/{v}, model {b:?} at {now}"),
                    }
                    if seen.is_none() {
                        model.insert((s, v), (now + WINDOW, false));
                        m.insert_pending(k, f, now + WINDOW);
                        writes.push_back((s, v));
                    }
                }
                Op::Settle(stored) => {
                    if let Some((s, v)) = writes.pop_front() {
                        m.settle(&key(s, v).0, stored);
                        if stored {
                            model.get_mut(&(s, v)).expect("pending in the model").1 = true;
                        } else {
                            model.remove(&(s, v));
                        }
                    }
                }
                Op::Wait(d) => now += d,
            }
            let st = m.stats();
            prop_assert_eq!(st.pending_keys as usize, writes.len());
            let settled = m.len() - writes.len();
            prop_assert!(st.used_bytes <= st.budget_bytes || settled == 0, "{st:?}");
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn without_a_budget_limit_the_memory_is_the_model(ops in prop::collection::vec(op(), 1..400)) {
            run(&ops, usize::MAX)?;
        }

        #[test]
        fn under_a_small_budget_only_dropped_keys_are_forgotten(
            ops in prop::collection::vec(op(), 1..600),
            chunks in 1usize..4,
        ) {
            run(&ops, chunks * CHUNK_COST + 2 * STREAM_COST + 8 * EXACT_COST)?;
        }
    }
}
