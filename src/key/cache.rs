//! The key memo: the key of recently seen requests, by a hash of their raw
//! bytes, so that a repeat request (the same bytes an SDK sends every time)
//! skips canonicalisation: no JSON parse, no re-serialisation.
//!
//! It owns only this shortcut. The key itself is always what
//! [`Canonical::key`] computes: a request seen for the first time, or sent
//! with different bytes that mean the same thing, takes the full path and
//! gets the same key. The raw hash covers every input of
//! [`Canonical::new`] (the key rules: presets and ignored pointers; the
//! credential only when the rules use it), under
//! its own blake3 context, length-prefixed, so two requests share a memo
//! slot only if they would be canonicalised identically.
//!
//! Bounded: each shard holds at most `capacity / shards` keys and is
//! emptied when full, which keeps memory flat and costs only a
//! re-canonicalisation of requests seen again later.
//!
//! In front of it, recent requests are also remembered by their exact
//! bytes, within a byte budget: a repeat is found by a keyed hash
//! (foldhash, a random seed per process) of the request's small fields and a
//! sample of its body (all of a small body; the ends and 16 words of a
//! large one: an agent's request carries its whole context, and 100 KB is
//! ordinary) and confirmed by comparing every byte of every input. That
//! costs a fraction of a blake3 pass (a tenth for 100 KB). The comparison,
//! not the hash, decides, so two different requests never share a key
//! whatever a tenant sends; a sample that many bodies share only sends
//! them back to the hashed memo.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::RwLock;

use bytes::Bytes;

use crate::key::sharded::ShardedMap;
use crate::key::spread::{Spread, MAX_RUN};
use crate::key::{Canonical, KeyRules, RequestKey, RequestParts};

/// blake3 `derive_key` context of the raw-request hash (memory only, never
/// stored, so it can change freely).
const RAW_CONTEXT: &str = "llmtape 2026-12-01 raw request memo";

/// Shards of the memo; a power of two above the core counts we run on, so
/// concurrent requests rarely wait on the same lock.
const SHARDS: usize = 32;

/// Keys remembered by default: about 100 bytes each, so 32,768 keys are
/// about 3 MiB, and cover the working set of any test suite.
pub const DEFAULT_CAPACITY: usize = 32 * 1024;

/// Bodies up to this size are sampled whole: the sample below needs room
/// for its edges and words.
const SAMPLE_WHOLE: usize = 2 * SAMPLE_EDGE + 8 * (SAMPLE_WORDS + 1);
const _: () = assert!(SAMPLE_WHOLE <= MAX_RUN);

/// Bytes of request bodies (plus [`EXACT_OVERHEAD`] each) kept for
/// comparison: about eighty 100 KB agent requests (an agent test suite's
/// repeated turns), or some twenty thousand small ones. Past it the exact
/// memo starts over; requests it does not hold still take their key from
/// the hashed memo, at the cost of a blake3 pass (about 3,700 instructions
/// for a 250-byte body under callgrind, 24 µs for 100 KB natively).
const EXACT_BUDGET: usize = 8 * 1024 * 1024;

/// What one remembered request costs beside its bytes (the entry, its
/// head's buffer, the map slot), for the budget.
const EXACT_OVERHEAD: usize = 160;

/// Bodies remembered per sample: a tenant who sends many bodies with one
/// sample only evicts its own bucket's entries (they go back to the
/// hashed memo), never gets another body's key.
const EXACT_PER_SAMPLE: usize = 4;

/// Bytes hashed from each end of a body, and words sampled between, to
/// pick its bucket (the comparison decides, so the sample only spreads).
const SAMPLE_EDGE: usize = 64;
const SAMPLE_WORDS: usize = 16;

/// Large bodies by their exact bytes.
#[derive(Debug, Default)]
struct ExactMemo {
    buckets: HashMap<u64, Vec<Remembered>, foldhash::fast::RandomState>,
    bytes: usize,
}

/// One remembered request: every input of its key, as bytes.
#[derive(Debug)]
struct Remembered {
    /// The length-prefixed method, path, query, content type, namespace
    /// and credential (see [`frame`]).
    head: Vec<u8>,
    body: Bytes,
    key: RequestKey,
}

/// Remembers the key of recently seen raw requests.
#[derive(Debug)]
pub struct KeyMemo {
    /// Raw-request hash -> key.
    keys: ShardedMap<[u8; 32], RequestKey>,
    per_shard: usize,
    /// Large bodies by their bytes.
    exact: RwLock<ExactMemo>,
    /// The sample hash's seed: random per process, so no one can aim
    /// bodies at another's bucket. foldhash, not std's SipHash: a third
    /// of the instructions for a 1 KB body, and the comparison decides.
    sample_key: foldhash::fast::RandomState,
    /// The rules every key of this memo is computed under.
    rules: KeyRules,
    /// [`KeyRules`] framed once (the presets and pointers, the same for
    /// every request), for the hashed memo's hash.
    rules_frame: Vec<u8>,
}

/// A request's key, and its canonical form when it had to be computed.
#[derive(Debug)]
pub struct Keyed {
    /// The request's key.
    pub key: RequestKey,
    /// The canonical form, if this request was canonicalised now (a memo
    /// miss); `None` when the key came from the memo.
    pub canonical: Option<Canonical>,
}

impl KeyMemo {
    /// A memo holding at most about `capacity` keys (0 disables it) of
    /// requests keyed under `rules`. One memo serves one set of rules: it
    /// never hands out a key computed under others.
    pub fn new(capacity: usize, rules: KeyRules) -> KeyMemo {
        let mut rules_frame = Vec::new();
        frame_rules(&rules, |bytes| rules_frame.extend_from_slice(bytes));
        KeyMemo {
            keys: ShardedMap::new(SHARDS),
            per_shard: capacity.div_ceil(SHARDS),
            exact: RwLock::default(),
            sample_key: foldhash::fast::RandomState::default(),
            rules,
            rules_frame,
        }
    }

    /// The rules its keys are computed under.
    pub fn rules(&self) -> &KeyRules {
        &self.rules
    }

    /// The key of `parts`: from the memo when these exact bytes were seen,
    /// otherwise canonicalised (and remembered).
    pub fn key(&self, parts: &RequestParts<'_>) -> Keyed {
        let rules = &self.rules;
        if self.per_shard == 0 {
            let canonical = Canonical::new(parts, rules);
            return Keyed {
                key: canonical.key(),
                canonical: Some(canonical),
            };
        }
        let (sample, found, head) = HEAD.with(|buffer| {
            let mut head = buffer.borrow_mut();
            head.clear();
            self.frame(parts, |bytes| head.extend_from_slice(bytes));
            let body = Spread::One(parts.body);
            let sample = self.sample(&head, body);
            match self.exact_get(sample, &head, body) {
                Some(key) => (sample, Some(key), Vec::new()),
                None => (sample, None, head.clone()),
            }
        });
        if let Some(key) = found {
            return Keyed {
                key,
                canonical: None,
            };
        }
        let keyed = self.hashed(parts);
        self.exact_insert(sample, head, parts.body, keyed.key);
        keyed
    }

    /// The key of `parts` with the body spread over `pieces` (`parts.body`
    /// is not read), when the exact memo holds these bytes: found without
    /// joining the pieces. `None` sends the caller to [`KeyMemo::key`] with
    /// the body whole.
    pub fn remembered(&self, parts: &RequestParts<'_>, pieces: &[Bytes]) -> Option<RequestKey> {
        if self.per_shard == 0 {
            return None;
        }
        HEAD.with(|buffer| {
            let mut head = buffer.borrow_mut();
            head.clear();
            self.frame(parts, |bytes| head.extend_from_slice(bytes));
            let body = Spread::Pieces(pieces);
            let sample = self.sample(&head, body);
            self.exact_get(sample, &head, body)
        })
    }

    /// The key from the hashed memo, or canonicalised (and remembered).
    fn hashed(&self, parts: &RequestParts<'_>) -> Keyed {
        let rules = &self.rules;
        let raw = self.raw_hash(parts);
        if let Some(key) = self.keys.get(&raw) {
            return Keyed {
                key,
                canonical: None,
            };
        }
        // Canonicalise outside the lock: it is the slow part.
        let canonical = Canonical::new(parts, rules);
        let key = canonical.key();
        let mut shard = self.keys.write(&raw);
        if shard.map.len() >= self.per_shard {
            shard.map.clear();
        }
        shard.map.insert(raw, key);
        Keyed {
            key,
            canonical: Some(canonical),
        }
    }

    /// A keyed hash of `head`, the body's length, its ends and words
    /// spread over it: it spreads the buckets; comparison decides. The
    /// same for a body whole or in pieces (each part is hashed as one
    /// slice either way).
    fn sample(&self, head: &[u8], body: Spread<'_>) -> u64 {
        let mut hasher = self.sample_key.build_hasher();
        hasher.write(head);
        let len = body.len();
        hasher.write_usize(len);
        if len <= SAMPLE_WHOLE {
            body.with(0, len, |bytes| hasher.write(bytes));
            return hasher.finish();
        }
        body.with(0, SAMPLE_EDGE, |bytes| hasher.write(bytes));
        body.with(len - SAMPLE_EDGE, SAMPLE_EDGE, |bytes| hasher.write(bytes));
        let stride = len / (SAMPLE_WORDS + 1);
        for i in 1..=SAMPLE_WORDS {
            body.with(i * stride, 8, |bytes| hasher.write(bytes));
        }
        hasher.finish()
    }

    /// The key of exactly these bytes, if remembered.
    fn exact_get(&self, sample: u64, head: &[u8], body: Spread<'_>) -> Option<RequestKey> {
        let exact = crate::sync::read(&self.exact);
        exact
            .buckets
            .get(&sample)?
            .iter()
            .find(|r| r.head == head && body.eq(&r.body))
            .map(|r| r.key)
    }

    /// Remembers `key` for these bytes (a copy of the body: the request's
    /// own buffer may be far larger than its body).
    fn exact_insert(&self, sample: u64, head: Vec<u8>, body: &[u8], key: RequestKey) {
        if body.len() > EXACT_BUDGET / 4 {
            return;
        }
        let cost = body.len() + head.len() + EXACT_OVERHEAD;
        let mut exact = crate::sync::write(&self.exact);
        if exact.bytes + cost > EXACT_BUDGET {
            exact.buckets.clear();
            exact.bytes = 0;
        }
        let bucket = exact.buckets.entry(sample).or_default();
        if bucket.iter().any(|r| r.head == head && r.body == body) {
            return;
        }
        let mut freed = 0;
        if bucket.len() >= EXACT_PER_SAMPLE {
            let old = bucket.remove(0);
            freed = old.body.len() + old.head.len() + EXACT_OVERHEAD;
        }
        bucket.push(Remembered {
            head,
            body: Bytes::copy_from_slice(body),
            key,
        });
        exact.bytes = exact.bytes - freed + cost;
    }

    /// Large bodies remembered by their bytes now.
    #[cfg(test)]
    fn exact_len(&self) -> usize {
        crate::sync::read(&self.exact)
            .buckets
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Keys remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when nothing is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

thread_local! {
    /// The framed head of the request being keyed on this thread: built in
    /// a buffer the thread keeps, so a hit allocates nothing; only a new
    /// entry takes a copy.
    static HEAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl KeyMemo {
    /// Feeds every input of canonicalisation but the body and the key
    /// rules (the memo's own) to `sink`, each length-prefixed (`u64::MAX`
    /// for an absent one), so the bytes name the fields exactly.
    fn frame(&self, parts: &RequestParts<'_>, mut sink: impl FnMut(&[u8])) {
        let mut put = |bytes: Option<&[u8]>| field(&mut sink, bytes);
        put(Some(parts.method.as_bytes()));
        put(Some(parts.path.as_bytes()));
        put(parts.query.map(str::as_bytes));
        put(parts.content_type.map(str::as_bytes));
        put(parts.namespace.map(str::as_bytes));
        // Without per-credential keys the credential does not change the
        // key, so it must not split the memo either.
        put(if self.rules.per_credential {
            Some(parts.credential.unwrap_or(b""))
        } else {
            None
        });
        // The Anthropic headers in the key; the betas counted first so
        // that a list of them cannot run into the next field. (The key
        // rules are the memo's own, the same for every request: the
        // exact memo leaves them out, the hashed one adds them.)
        put(parts.anthropic_version.map(str::as_bytes));
        put(Some(&(parts.anthropic_beta.len() as u64).to_le_bytes()));
        for beta in &parts.anthropic_beta {
            put(Some(beta.as_bytes()));
        }
    }

    /// blake3 over every input of canonicalisation, length-prefixed,
    /// keyed by a key derived once from [`RAW_CONTEXT`] (deriving it per
    /// request cost a compression of the context every time). Streamed:
    /// no buffer.
    fn raw_hash(&self, parts: &RequestParts<'_>) -> [u8; 32] {
        static RAW_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = RAW_KEY.get_or_init(|| blake3::derive_key(RAW_CONTEXT, b"memo"));
        let mut hasher = blake3::Hasher::new_keyed(key);
        self.frame(parts, |bytes| {
            hasher.update(bytes);
        });
        hasher.update(&self.rules_frame);
        hasher.update(&(parts.body.len() as u64).to_le_bytes());
        hasher.update(parts.body);
        *hasher.finalize().as_bytes()
    }

    /// [`KeyMemo::frame`] as bytes (what the exact memo compares).
    #[cfg(test)]
    fn framed_head(&self, parts: &RequestParts<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.frame(parts, |bytes| out.extend_from_slice(bytes));
        out
    }
}

/// One length-prefixed field (`u64::MAX` for an absent one).
fn field(sink: &mut impl FnMut(&[u8]), bytes: Option<&[u8]>) {
    match bytes {
        None => sink(&u64::MAX.to_le_bytes()),
        Some(bytes) => {
            sink(&(bytes.len() as u64).to_le_bytes());
            sink(bytes);
        }
    }
}

/// The rules' part of the hashed memo's input: one memo serves one
/// proxy's rules, but its hash names them all the same (a few short
/// strings).
fn frame_rules(rules: &KeyRules, mut sink: impl FnMut(&[u8])) {
    let mut put = |bytes: Option<&[u8]>| field(&mut sink, bytes);
    put(Some(&(rules.presets.len() as u64).to_le_bytes()));
    for preset in &rules.presets {
        put(Some(preset.as_str().as_bytes()));
    }
    put(Some(&(rules.ignore_fields.len() as u64).to_le_bytes()));
    for pointer in &rules.ignore_fields {
        put(Some(pointer.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(body: &'a [u8], credential: Option<&'a [u8]>) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            path: "/v1/chat/completions",
            query: None,
            content_type: Some("application/json"),
            body,
            namespace: None,
            credential,
            anthropic_version: None,
            anthropic_beta: Vec::new(),
        }
    }

    fn rules(per_credential: bool) -> KeyRules {
        KeyRules {
            presets: crate::key::DEFAULT_PRESETS.to_vec(),
            ignore_fields: vec!["/user".into()],
            per_credential,
        }
    }

    #[test]
    fn a_repeat_request_takes_its_key_from_the_memo_and_it_is_the_canonical_key() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#;
        let first = memo.key(&parts(body, None));
        let canonical = first.canonical.expect("a first request is canonicalised");
        assert_eq!(first.key, canonical.key());
        let second = memo.key(&parts(body, None));
        assert!(second.canonical.is_none(), "the repeat came from the memo");
        assert_eq!(second.key, first.key);
    }

    #[test]
    fn equal_json_in_other_bytes_is_canonicalised_and_gets_the_same_key() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let a = memo.key(&parts(br#"{"a":1,"b":[1.0,2]}"#, None));
        let b = memo.key(&parts(br#"{ "b": [1, 2.0], "a": 1 }"#, None));
        assert!(b.canonical.is_some());
        assert_eq!(a.key, b.key);
    }

    #[test]
    fn every_input_of_the_key_splits_the_memo() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let body = br#"{"model":"m"}"#;
        let base = parts(body, None);
        let variants = [
            RequestParts {
                method: "PUT",
                ..base.clone()
            },
            RequestParts {
                path: "/v1/embeddings",
                ..base.clone()
            },
            RequestParts {
                query: Some("api-version=1"),
                ..base.clone()
            },
            RequestParts {
                namespace: Some("suite-a"),
                ..base.clone()
            },
            RequestParts {
                content_type: Some("text/plain"),
                ..base.clone()
            },
        ];
        let _ = memo.key(&base);
        for variant in &variants {
            let keyed = memo.key(variant);
            assert!(keyed.canonical.is_some(), "{variant:?} hit the memo");
            assert_eq!(keyed.key, Canonical::new(variant, memo.rules()).key());
        }
    }

    #[test]
    fn the_credential_splits_the_memo_only_when_it_is_part_of_the_key() {
        let body = br#"{"model":"m"}"#;
        let global = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let a = global.key(&parts(body, Some(b"Bearer sk-a")));
        let b = global.key(&parts(body, Some(b"Bearer sk-b")));
        assert!(b.canonical.is_none());
        assert_eq!(a.key, b.key);

        let tenants = KeyMemo::new(DEFAULT_CAPACITY, rules(true));
        let a = tenants.key(&parts(body, Some(b"Bearer sk-a")));
        let b = tenants.key(&parts(body, Some(b"Bearer sk-b")));
        assert!(b.canonical.is_some());
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn each_memo_keys_under_its_own_rules_and_hashes_them() {
        let body = br#"{"model":"m","user":"u","metadata":{"user_id":"s"}}"#;
        let base = rules(false);
        let variants = [
            base.clone(),
            KeyRules {
                presets: vec![],
                ..base.clone()
            },
            KeyRules {
                presets: vec![crate::key::Preset::OpenaiIdentity],
                ..base.clone()
            },
            KeyRules {
                ignore_fields: vec![],
                ..base.clone()
            },
        ];
        let mut hashes = Vec::new();
        for variant in &variants {
            let memo = KeyMemo::new(DEFAULT_CAPACITY, variant.clone());
            let first = memo.key(&parts(body, None));
            let again = memo.key(&parts(body, None));
            assert!(again.canonical.is_none());
            let canonical = Canonical::new(&parts(body, None), variant).key();
            assert_eq!(
                (first.key, again.key),
                (canonical, canonical),
                "{variant:?}"
            );
            // The exact memo's head leaves the memo's rules out; the
            // hashed memo's hash names them.
            assert_eq!(memo.framed_head(&parts(body, None)), {
                let other = KeyMemo::new(DEFAULT_CAPACITY, base.clone());
                other.framed_head(&parts(body, None))
            });
            hashes.push(memo.raw_hash(&parts(body, None)));
        }
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b, "two rule sets hashed alike");
            }
        }
    }

    #[test]
    fn the_memo_stays_within_its_capacity() {
        let memo = KeyMemo::new(64, rules(false));
        for i in 0..10_000 {
            let body = format!(r#"{{"n":{i}}}"#);
            let _ = memo.key(&parts(body.as_bytes(), None));
        }
        assert!(memo.len() <= 64, "{} keys remembered", memo.len());
        assert!(!memo.is_empty());
    }

    /// A JSON chat body of at least `size` bytes whose content is `fill`.
    fn large(size: usize, fill: char) -> Vec<u8> {
        let content: String = std::iter::repeat_n(fill, size).collect();
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#)
            .into_bytes()
    }

    #[test]
    fn a_small_repeat_is_found_by_its_bytes_too() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let body = br#"{"model":"m"}"#;
        let first = memo.key(&parts(body, None));
        assert_eq!((memo.exact_len(), memo.len()), (1, 1));
        let second = memo.key(&parts(body, None));
        assert!(second.canonical.is_none());
        assert_eq!(second.key, first.key);
        // One byte apart, and a body that is a prefix of another.
        for other in [
            &br#"{"model":"n"}"#[..],
            br#"{"model":"m"}  "#,
            br#"{"model""#,
        ] {
            let keyed = memo.key(&parts(other, None));
            assert!(
                keyed.canonical.is_some(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn a_large_repeat_is_found_by_its_bytes() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let body = large(100 * 1024, 'a');
        let first = memo.key(&parts(&body, None));
        assert!(first.canonical.is_some());
        assert_eq!(memo.exact_len(), 1);
        let second = memo.key(&parts(&body, None));
        assert!(second.canonical.is_none());
        assert_eq!(second.key, first.key);
    }

    /// `body` cut into pieces at `cuts`.
    fn cut(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&body.len()]) {
            pieces.push(Bytes::copy_from_slice(&body[from..to]));
            from = to;
        }
        pieces
    }

    #[test]
    fn a_body_in_pieces_samples_and_compares_as_it_does_whole() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let head = memo.framed_head(&parts(b"", None));
        for size in [0, 200, 230, 3000, 100 * 1024] {
            let body = large(size, 'p');
            let body = body.as_slice();
            let len = body.len();
            let whole = memo.sample(&head, Spread::One(body));
            let stride = len / (SAMPLE_WORDS + 1);
            // Cuts inside an edge, inside a sampled word, at a piece end.
            let mut cut_sets = vec![vec![len / 2], vec![1, 2, 3]];
            if len > SAMPLE_WHOLE {
                cut_sets.push(vec![SAMPLE_EDGE / 2, stride + 3, len - 5]);
                cut_sets.push(vec![SAMPLE_EDGE, 2 * stride + 4, 2 * stride + 6]);
            }
            for cuts in cut_sets {
                let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= len).collect();
                cuts.sort_unstable();
                let pieces = cut(body, &cuts);
                let spread = Spread::Pieces(&pieces);
                assert_eq!(memo.sample(&head, spread), whole, "{len} {cuts:?}");
                assert!(spread.eq(body), "{len} {cuts:?}");
                let mut other = body.to_vec();
                other[len - 1] ^= 1;
                assert!(!spread.eq(&other), "{len} {cuts:?}");
                assert!(!spread.eq(&body[..len - 1]), "{len} {cuts:?}");
            }
        }
    }

    #[test]
    fn a_repeat_in_pieces_is_found_without_joining_and_only_when_every_byte_matches() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let body = large(100 * 1024, 'a');
        let pieces = cut(&body, &[65_536]);
        assert_eq!(
            memo.remembered(&parts(b"", None), &pieces),
            None,
            "nothing is remembered yet"
        );
        let first = memo.key(&parts(&body, None));
        assert_eq!(memo.remembered(&parts(b"", None), &pieces), Some(first.key));
        // One byte changed in the second piece, where no sample reads.
        let mut changed = body.clone();
        let stride = changed.len() / (SAMPLE_WORDS + 1);
        changed[2 * stride + 20] ^= 1;
        assert_eq!(
            memo.remembered(&parts(b"", None), &cut(&changed, &[65_536])),
            None
        );
        // The other inputs still split it.
        let tenants = KeyMemo::new(DEFAULT_CAPACITY, rules(true));
        let _ = tenants.key(&parts(&body, Some(b"sk-one")));
        assert!(tenants
            .remembered(&parts(b"", Some(b"sk-one")), &pieces)
            .is_some());
        assert_eq!(
            tenants.remembered(&parts(b"", Some(b"sk-other")), &pieces),
            None
        );
        assert_eq!(
            KeyMemo::new(0, rules(false)).remembered(&parts(b"", None), &pieces),
            None
        );
    }

    #[test]
    fn large_bodies_that_share_every_sampled_byte_keep_their_own_keys() {
        // Differ in one byte that the sample does not read: same bucket,
        // and the comparison tells them apart.
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let a = large(100 * 1024, 'a');
        let mut b = a.clone();
        let stride = b.len() / (SAMPLE_WORDS + 1);
        let at = stride + 20;
        b[at] = b'b';
        let head = memo.framed_head(&parts(&a, None));
        assert_eq!(
            memo.sample(&head, Spread::One(&a)),
            memo.sample(&head, Spread::One(&b))
        );
        let ka = memo.key(&parts(&a, None)).key;
        let kb = memo.key(&parts(&b, None));
        assert!(kb.canonical.is_some(), "b was not taken for a");
        assert_ne!(ka, kb.key);
        assert_eq!(kb.key, Canonical::new(&parts(&b, None), memo.rules()).key());
        // Both are remembered, each with its own key.
        assert_eq!(memo.key(&parts(&a, None)).key, ka);
        assert_eq!(memo.key(&parts(&b, None)).key, kb.key);
    }

    #[test]
    fn a_crowded_sample_evicts_only_its_own_bucket_and_stays_exact() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        let base = large(64 * 1024, 'a');
        let stride = base.len() / (SAMPLE_WORDS + 1);
        let mut keys = Vec::new();
        for i in 0..3 * EXACT_PER_SAMPLE {
            let mut body = base.clone();
            body[stride + 20] = b'a' + (i % 26) as u8;
            body[stride + 21] = b'a' + (i / 26) as u8;
            let keyed = memo.key(&parts(&body, None));
            assert_eq!(
                keyed.key,
                Canonical::new(&parts(&body, None), memo.rules()).key()
            );
            keys.push((body, keyed.key));
        }
        assert!(memo.exact_len() <= EXACT_PER_SAMPLE);
        for (body, key) in &keys {
            assert_eq!(memo.key(&parts(body, None)).key, *key);
        }
    }

    #[test]
    fn the_exact_memo_stays_within_its_budget_and_every_input_splits_it() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY, rules(false));
        for i in 0..(2 * EXACT_BUDGET / (100 * 1024)) {
            let body = large(100 * 1024, char::from(b'a' + (i % 26) as u8));
            let mut body = body;
            body.extend_from_slice(format!(" {i}").as_bytes());
            let _ = memo.key(&parts(&body, None));
        }
        let held: usize = crate::sync::read(&memo.exact).bytes;
        assert!(held <= EXACT_BUDGET, "{held} bytes held");
        let body = large(32 * 1024, 'z');
        let base = parts(&body, None);
        let _ = memo.key(&base);
        for variant in [
            RequestParts {
                path: "/v1/embeddings",
                ..base.clone()
            },
            RequestParts {
                namespace: Some("suite-a"),
                ..base.clone()
            },
            RequestParts {
                query: Some("a=1"),
                ..base.clone()
            },
        ] {
            let keyed = memo.key(&variant);
            assert!(keyed.canonical.is_some(), "{variant:?} hit the memo");
            assert_eq!(keyed.key, Canonical::new(&variant, memo.rules()).key());
        }
    }

    #[test]
    fn capacity_zero_always_canonicalises() {
        let memo = KeyMemo::new(0, rules(false));
        let body = br#"{"model":"m"}"#;
        for _ in 0..2 {
            assert!(memo.key(&parts(body, None)).canonical.is_some());
        }
        assert!(memo.is_empty());
    }
}
