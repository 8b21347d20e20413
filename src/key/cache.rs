//! The key memo: the key of recently seen requests, by a hash of their raw
//! bytes, so that a repeat request (the same bytes an SDK sends every time)
//! skips canonicalisation: no JSON parse, no re-serialisation.
//!
//! It owns only this shortcut. The key itself is always what
//! [`Canonical::key`] computes: a request seen for the first time, or sent
//! with different bytes that mean the same thing, takes the full path and
//! gets the same key. The raw hash covers every input of
//! [`Canonical::new`] (the credential only when the key rules use it), under
//! its own blake3 context, length-prefixed, so two requests share a memo
//! slot only if they would be canonicalised identically.
//!
//! Bounded: each shard holds at most `capacity / shards` keys and is
//! emptied when full, which keeps memory flat and costs only a
//! re-canonicalisation of requests seen again later.

use crate::key::sharded::ShardedMap;
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

/// Remembers the key of recently seen raw requests.
#[derive(Debug)]
pub struct KeyMemo {
    /// Raw-request hash -> key.
    keys: ShardedMap<[u8; 32], RequestKey>,
    per_shard: usize,
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
    /// A memo holding at most about `capacity` keys (0 disables it).
    pub fn new(capacity: usize) -> KeyMemo {
        KeyMemo {
            keys: ShardedMap::new(SHARDS),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    /// The key of `parts` under `rules`: from the memo when these exact
    /// bytes were seen, otherwise canonicalised (and remembered).
    pub fn key(&self, parts: &RequestParts<'_>, rules: &KeyRules) -> Keyed {
        if self.per_shard == 0 {
            let canonical = Canonical::new(parts, rules);
            return Keyed {
                key: canonical.key(),
                canonical: Some(canonical),
            };
        }
        let raw = raw_hash(parts, rules);
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

/// blake3 over every input of canonicalisation, length-prefixed.
fn raw_hash(parts: &RequestParts<'_>, rules: &KeyRules) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(RAW_CONTEXT);
    let mut field = |bytes: Option<&[u8]>| match bytes {
        None => {
            hasher.update(&u64::MAX.to_le_bytes());
        }
        Some(bytes) => {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
    };
    field(Some(parts.method.as_bytes()));
    field(Some(parts.path.as_bytes()));
    field(parts.query.map(str::as_bytes));
    field(parts.content_type.map(str::as_bytes));
    field(parts.namespace.map(str::as_bytes));
    // Without per-credential keys the credential does not change the key,
    // so it must not split the memo either.
    field(if rules.per_credential {
        Some(parts.credential.unwrap_or(b""))
    } else {
        None
    });
    field(Some(parts.body));
    field(parts.anthropic_version.map(str::as_bytes));
    for beta in &parts.anthropic_beta {
        field(Some(beta.as_bytes()));
    }
    *hasher.finalize().as_bytes()
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
            ignore_fields: vec!["/user".into()],
            per_credential,
        }
    }

    #[test]
    fn a_repeat_request_takes_its_key_from_the_memo_and_it_is_the_canonical_key() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#;
        let first = memo.key(&parts(body, None), &rules(false));
        let canonical = first.canonical.expect("a first request is canonicalised");
        assert_eq!(first.key, canonical.key());
        let second = memo.key(&parts(body, None), &rules(false));
        assert!(second.canonical.is_none(), "the repeat came from the memo");
        assert_eq!(second.key, first.key);
    }

    #[test]
    fn equal_json_in_other_bytes_is_canonicalised_and_gets_the_same_key() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY);
        let a = memo.key(&parts(br#"{"a":1,"b":[1.0,2]}"#, None), &rules(false));
        let b = memo.key(&parts(br#"{ "b": [1, 2.0], "a": 1 }"#, None), &rules(false));
        assert!(b.canonical.is_some());
        assert_eq!(a.key, b.key);
    }

    #[test]
    fn every_input_of_the_key_splits_the_memo() {
        let memo = KeyMemo::new(DEFAULT_CAPACITY);
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
        let _ = memo.key(&base, &rules(false));
        for variant in &variants {
            let keyed = memo.key(variant, &rules(false));
            assert!(keyed.canonical.is_some(), "{variant:?} hit the memo");
            assert_eq!(keyed.key, Canonical::new(variant, &rules(false)).key());
        }
    }

    #[test]
    fn the_credential_splits_the_memo_only_when_it_is_part_of_the_key() {
        let body = br#"{"model":"m"}"#;
        let global = KeyMemo::new(DEFAULT_CAPACITY);
        let a = global.key(&parts(body, Some(b"Bearer sk-a")), &rules(false));
        let b = global.key(&parts(body, Some(b"Bearer sk-b")), &rules(false));
        assert!(b.canonical.is_none());
        assert_eq!(a.key, b.key);

        let tenants = KeyMemo::new(DEFAULT_CAPACITY);
        let a = tenants.key(&parts(body, Some(b"Bearer sk-a")), &rules(true));
        let b = tenants.key(&parts(body, Some(b"Bearer sk-b")), &rules(true));
        assert!(b.canonical.is_some());
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn the_memo_stays_within_its_capacity() {
        let memo = KeyMemo::new(64);
        for i in 0..10_000 {
            let body = format!(r#"{{"n":{i}}}"#);
            let _ = memo.key(&parts(body.as_bytes(), None), &rules(false));
        }
        assert!(memo.len() <= 64, "{} keys remembered", memo.len());
        assert!(!memo.is_empty());
    }

    #[test]
    fn capacity_zero_always_canonicalises() {
        let memo = KeyMemo::new(0);
        let body = br#"{"model":"m"}"#;
        for _ in 0..2 {
            assert!(memo
                .key(&parts(body, None), &rules(false))
                .canonical
                .is_some());
        }
        assert!(memo.is_empty());
    }
}
