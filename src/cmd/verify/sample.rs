//! Which keys `verify` re-sends: all that a filter keeps, or a uniform
//! random sample of them, holding only keys so a large store costs little
//! memory.

use std::collections::BinaryHeap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cmd::filter::Filter;
use crate::key::RequestKey;
use crate::record::recording::Recording;

/// Keeps every key, or a uniform random sample of `limit` keys: each key
/// gets a random rank (a keyed hash under a per-run seed) and the lowest
/// ranks are kept, in a heap of at most `limit` entries.
pub(super) struct Picker {
    limit: Option<usize>,
    seed: [u8; 32],
    ranked: BinaryHeap<([u8; 32], RequestKey)>,
    all: Vec<RequestKey>,
}

impl Picker {
    pub(super) fn new(limit: Option<usize>) -> Picker {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut hasher = blake3::Hasher::new_derive_key("llmtape verify sample seed");
        hasher.update(&nanos.to_le_bytes());
        hasher.update(&std::process::id().to_le_bytes());
        Picker {
            limit,
            seed: *hasher.finalize().as_bytes(),
            ranked: BinaryHeap::new(),
            all: Vec::new(),
        }
    }

    pub(super) fn offer(&mut self, entry: &Recording, filter: &Filter) {
        if !filter.keeps(entry) {
            return;
        }
        let key = entry.key();
        match self.limit {
            None => self.all.push(key),
            Some(limit) => {
                let rank = *blake3::keyed_hash(&self.seed, key.as_bytes()).as_bytes();
                self.ranked.push((rank, key));
                if self.ranked.len() > limit {
                    self.ranked.pop();
                }
            }
        }
    }

    pub(super) fn keys(self) -> Vec<RequestKey> {
        let mut keys = match self.limit {
            None => self.all,
            Some(_) => self.ranked.into_iter().map(|(_, key)| key).collect(),
        };
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;

    #[test]
    fn a_sample_is_the_asked_size_and_varies_between_runs() {
        let entries: Vec<Recording> = (0u8..50)
            .map(|i| {
                let mut e = test_entry(&"00".repeat(32), "{}", "fp", Some("m"), "t");
                e.meta.key = RequestKey::from_hex(&format!("{i:02x}").repeat(32)).unwrap();
                e
            })
            .collect();
        let pick = || {
            let mut picker = Picker::new(Some(5));
            for e in &entries {
                picker.offer(e, &Filter::default());
            }
            picker.keys()
        };
        let first = pick();
        assert_eq!(first.len(), 5);
        assert!(first.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert!(
            (0..20).any(|_| pick() != first),
            "twenty more samples of 5 out of 50 are not all the same"
        );
        let mut all = Picker::new(None);
        for e in &entries {
            all.offer(e, &Filter::default());
        }
        assert_eq!(all.keys().len(), 50);
    }
}
