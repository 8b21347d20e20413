//! The web view's list of recordings, kept in memory: one [`Row`] per
//! recording, so a page of a 100,000-recording store is a scan of rows,
//! never a decode of every recording.
//!
//! Built on first use by streaming the tier, then kept current: a
//! recording the proxy commits updates its row (`crate::serve::upstream_call`
//! calls [`Catalog::committed`]); a command that writes (`rm`, `import`,
//! `prune`, `rekey`, through `crate::serve::admin_commands`) drops the
//! rows, rebuilt on the next request; and rows that do not add up to the
//! tier's count (recordings pulled from a shared store) are rebuilt too.
//! Until the view is first used, commits cost one atomic load.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::route::Routes;
use crate::store::{Tier, TierError};
use crate::summary::{Interner, Row};

/// Largest page the list gives.
pub const MAX_LIMIT: usize = 500;

/// Rebuilds tried when writes keep invalidating the one under way; after
/// that the rows at hand are answered from.
const BUILD_ATTEMPTS: usize = 3;

/// The rows, with what keeps them current.
#[derive(Default)]
pub(crate) struct Catalog {
    state: Mutex<State>,
    /// Rows are built or being built: commits must report theirs.
    active: AtomicBool,
    /// One build at a time; others wait for it.
    building: Mutex<()>,
    /// Bumped by every commit and invalidation: what [`Catalog::cached`]
    /// keys its documents by.
    generation: AtomicU64,
    /// Documents worked out from every recording (fingerprints, audit), by
    /// name, with the generation and tier count they were made at.
    documents: Mutex<Vec<Document>>,
}

/// A document made from every recording, and when.
struct Document {
    name: &'static str,
    generation: u64,
    count: usize,
    doc: Arc<Value>,
}

#[derive(Default)]
struct State {
    rows: Option<Rows>,
    /// Rows committed while a build streams the tier.
    pending: Option<Vec<Row>>,
    /// Bumped by every invalidation, so a build that raced one is dropped.
    epoch: u64,
}

/// Every recording's row.
#[derive(Default)]
pub(crate) struct Rows {
    list: Vec<Row>,
    by_key: HashMap<RequestKey, usize>,
    /// Recordings the build could not read (counted, so the rows still
    /// add up to the tier's count).
    unreadable: usize,
    names: Interner,
    /// Indexes into `list`, newest first, and the facets: worked out again
    /// on the first request after a change, not on every request.
    order: Vec<u32>,
    facets: [Vec<String>; 4],
    /// `order` and `facets` are out of date.
    changed: bool,
}

/// Which rows a list request wants; every field that is set must match.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Exact route name.
    pub route: Option<String>,
    /// Exact model.
    pub model: Option<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact fingerprint.
    pub fingerprint: Option<String>,
    /// Case-insensitive text in the request's or the answer's text.
    pub q: Option<String>,
    /// Rows skipped, newest first.
    pub offset: usize,
    /// Rows given (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One page of rows.
pub struct Page {
    /// Rows matching the query, in all.
    pub total: usize,
    /// This page's rows, newest first.
    pub items: Vec<Row>,
    /// The distinct routes, models, namespaces and fingerprints of every
    /// row (the filters' choices).
    pub facets: [Vec<String>; 4],
}

/// Why a key prefix names no one recording.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not hex.
    NotHex,
    /// No key starts with it.
    Unknown,
    /// Several do: the first few.
    Ambiguous(usize, Vec<String>),
}

impl Rows {
    fn upsert(&mut self, mut row: Row) {
        for field in [
            &mut row.method,
            &mut row.path,
            &mut row.route,
            &mut row.model,
            &mut row.namespace,
            &mut row.fingerprint,
        ] {
            *field = self.names.get(field);
        }
        match self.by_key.get(&row.key) {
            Some(&i) => self.list[i] = row,
            None => {
                self.by_key.insert(row.key, self.list.len());
                self.list.push(row);
            }
        }
        self.changed = true;
    }

    /// Brings `order` and `facets` up to date.
    fn settle(&mut self) {
        if !self.changed {
            return;
        }
        let list = &self.list;
        let mut order: Vec<u32> = (0..list.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&list[a as usize], &list[b as usize]);
            b.recorded_at
                .cmp(&a.recorded_at)
                .then_with(|| a.key.as_bytes().cmp(b.key.as_bytes()))
        });
        let mut facets: [BTreeSet<&str>; 4] = Default::default();
        for r in list {
            for (set, value) in
                facets
                    .iter_mut()
                    .zip([&r.route, &r.model, &r.namespace, &r.fingerprint])
            {
                set.insert(value);
            }
        }
        self.facets = facets.map(|set| set.into_iter().map(String::from).collect());
        self.order = order;
        self.changed = false;
    }

    fn adds_up(&self, count: usize) -> bool {
        self.list.len() + self.unreadable == count
    }

    /// The page `query` asks for: one pass over the rows in order.
    pub fn page(&mut self, query: &Query) -> Page {
        self.settle();
        let q = query.q.as_ref().map(|q| q.to_lowercase());
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let unfiltered = query.route.is_none()
            && query.model.is_none()
            && query.namespace.is_none()
            && query.fingerprint.is_none()
            && q.is_none();
        let rows = self.order.iter().map(|&i| &self.list[i as usize]);
        let (total, items) = if unfiltered {
            let items = rows.skip(query.offset).take(query.limit).cloned().collect();
            (self.list.len(), items)
        } else {
            let mut total = 0;
            let mut items = Vec::new();
            for r in rows.filter(|r| {
                same(&query.route, &r.route)
                    && same(&query.model, &r.model)
                    && same(&query.namespace, &r.namespace)
                    && same(&query.fingerprint, &r.fingerprint)
                    && q.as_deref().is_none_or(|q| r.search.contains(q))
            }) {
                if total >= query.offset && items.len() < query.limit {
                    items.push(r.clone());
                }
                total += 1;
            }
            (total, items)
        };
        Page {
            total,
            items,
            facets: self.facets.clone(),
        }
    }

    /// The one row whose key starts with `prefix` (hex, any case).
    pub fn find(&self, prefix: &str) -> Result<&Row, Lookup> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Lookup::NotHex);
        }
        let nibbles: Vec<u8> = prefix
            .bytes()
            .map(|b| (b as char).to_digit(16).unwrap_or(0) as u8)
            .collect();
        let starts = |key: &RequestKey| {
            nibbles.iter().enumerate().all(|(i, n)| {
                let byte = key.as_bytes()[i / 2];
                let have = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
                have == *n
            })
        };
        let found: Vec<&Row> = self.list.iter().filter(|r| starts(&r.key)).collect();
        match found.as_slice() {
            [] => Err(Lookup::Unknown),
            [one] => Ok(one),
            many => Err(Lookup::Ambiguous(
                many.len(),
                many.iter().take(10).map(|r| r.key.to_hex()).collect(),
            )),
        }
    }
}

/// The route name `routes` gives a recording's request ("" for none).
fn route_of<'a>(routes: &'a Routes, recording: &Recording) -> &'a str {
    let r = &recording.meta.request;
    routes.name_of(&r.method, &r.path).unwrap_or("")
}

impl Catalog {
    /// A recording the proxy just committed, which replaced the key's
    /// previous one (moved to history, which keeps at most
    /// `history_limit`) if there was one.
    pub fn committed(&self, routes: &Routes, recording: &Recording, history_limit: usize) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let row = Row::of(
            recording,
            route_of(routes, recording),
            0,
            &mut Interner::default(),
        );
        let mut state = crate::sync::lock(&self.state);
        if let Some(pending) = &mut state.pending {
            pending.push(row);
        } else if let Some(rows) = &mut state.rows {
            let history = rows
                .by_key
                .get(&row.key)
                .map_or(0, |&i| (rows.list[i].history + 1).min(history_limit));
            rows.upsert(Row { history, ..row });
        }
    }

    /// Forgets the rows (a command changed recordings): the next request
    /// rebuilds them.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut state = crate::sync::lock(&self.state);
        state.rows = None;
        state.pending = None;
        state.epoch += 1;
        self.active.store(false, Ordering::Release);
    }

    /// Runs `f` on the rows of `tier`, built first if need be. Called on a
    /// blocking thread: a first build reads every recording.
    pub fn with_rows<R>(
        &self,
        tier: &dyn Tier,
        routes: &Routes,
        f: impl FnOnce(&mut Rows) -> R,
    ) -> Result<R, TierError> {
        for _ in 0..BUILD_ATTEMPTS {
            {
                let mut state = crate::sync::lock(&self.state);
                if let Some(rows) = state.rows.as_mut().filter(|r| r.adds_up(tier.count())) {
                    return Ok(f(rows));
                }
            }
            let _one_build = crate::sync::lock(&self.building);
            let epoch = {
                let mut state = crate::sync::lock(&self.state);
                if state.rows.as_ref().is_some_and(|r| r.adds_up(tier.count())) {
                    continue;
                }
                state.pending = Some(Vec::new());
                self.active.store(true, Ordering::Release);
                state.epoch
            };
            let mut rows = build(tier, routes)?;
            let mut state = crate::sync::lock(&self.state);
            if state.epoch != epoch {
                continue;
            }
            for mut row in state.pending.take().unwrap_or_default() {
                // The build may or may not have seen it: ask the tier.
                row.history = tier.history(&row.key)?.len();
                rows.upsert(row);
            }
            state.rows = Some(rows);
        }
        let mut state = crate::sync::lock(&self.state);
        match &mut state.rows {
            Some(rows) => Ok(f(rows)),
            None => Ok(f(&mut build(tier, routes)?)),
        }
    }
}

impl Catalog {
    /// The document `name`, made by `make` from every recording of `tier`,
    /// or the copy made before if no recording changed since (same
    /// generation, same count).
    pub fn cached<E>(
        &self,
        name: &'static str,
        tier: &dyn Tier,
        make: impl FnOnce() -> Result<Value, E>,
    ) -> Result<Arc<Value>, E> {
        let generation = self.generation.load(Ordering::Acquire);
        let count = tier.count();
        {
            let documents = crate::sync::lock(&self.documents);
            if let Some(d) = documents
                .iter()
                .find(|d| d.name == name && d.generation == generation && d.count == count)
            {
                return Ok(d.doc.clone());
            }
        }
        let doc = Arc::new(make()?);
        let mut documents = crate::sync::lock(&self.documents);
        documents.retain(|d| d.name != name);
        documents.push(Document {
            name,
            generation,
            count,
            doc: doc.clone(),
        });
        Ok(doc)
    }
}

/// Every recording's row, read from the tier.
fn build(tier: &dyn Tier, routes: &Routes) -> Result<Rows, TierError> {
    let mut rows = Rows::default();
    for item in tier.iter() {
        match item {
            Ok(recording) => {
                let history = tier.history(&recording.key())?.len();
                let row = Row::of(
                    &recording,
                    route_of(routes, &recording),
                    history,
                    &mut rows.names,
                );
                rows.upsert(row);
            }
            Err(error) if error.is_corrupt() => {
                tracing::warn!(%error, "the web view skips an unreadable recording");
                rows.unreadable += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    fn entry(hex: &str, fp: &str, model: &str, at: &str, text: &str) -> Recording {
        let body = serde_json::json!({"model": model, "system_fingerprint": fp,
            "choices": [{"index": 0, "message": {"content": text}}]});
        test_entry(&hex.repeat(32), body.to_string(), fp, Some(model), at)
    }

    #[test]
    fn rows_page_filter_and_follow_commits_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let routes = Routes::default();
        for (hex, fp, model, at, text) in [
            ("aa", "fp_1", "m1", "2026-01-01T00:00:00.000Z", "Alpha"),
            ("ab", "fp_1", "m2", "2026-01-03T00:00:00.000Z", "Beta"),
            ("bb", "fp_2", "m1", "2026-01-02T00:00:00.000Z", "Gamma"),
        ] {
            let e = entry(hex, fp, model, at, text);
            store.put(&e.key(), &e, 5).unwrap();
        }
        let catalog = Catalog::default();
        let all = Query {
            limit: 50,
            ..Query::default()
        };
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&all))
            .unwrap();
        assert_eq!(page.total, 3);
        let order: Vec<&str> = page.items.iter().map(|r| &*r.preview).collect();
        assert_eq!(order, ["Beta", "Gamma", "Alpha"], "newest first");
        assert_eq!(page.facets[1], ["m1", "m2"]);
        let second = Query {
            offset: 1,
            limit: 1,
            ..all.clone()
        };
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&second))
            .unwrap();
        assert_eq!((page.total, &*page.items[0].preview), (3, "Gamma"));
        let filtered = Query {
            model: Some("m1".into()),
            q: Some("ALPH".into()),
            ..all.clone()
        };
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&filtered))
            .unwrap();
        assert_eq!(page.total, 1);

        let find = |p: &str| {
            catalog
                .with_rows(&store, &routes, |rows| rows.find(p).map(|r| r.key.to_hex()))
                .unwrap()
        };
        assert_eq!(find("aa"), Ok("aa".repeat(32)));
        assert_eq!(find("AB"), Ok("ab".repeat(32)));
        assert!(matches!(find("a"), Err(Lookup::Ambiguous(2, _))));
        assert_eq!(find("c"), Err(Lookup::Unknown));
        assert_eq!(find("zz"), Err(Lookup::NotHex));

        // A commit updates its row in place, history counted.
        let newer = entry("aa", "fp_3", "m1", "2026-01-04T00:00:00.000Z", "Alpha two");
        store.put(&newer.key(), &newer, 5).unwrap();
        catalog.committed(&routes, &newer, 5);
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&all))
            .unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(
            (&*page.items[0].preview, page.items[0].history),
            ("Alpha two", 1)
        );
        // A removal behind the catalog's back no longer adds up: rebuilt.
        store.remove(&newer.key()).unwrap();
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&all))
            .unwrap();
        assert_eq!(page.total, 2);
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok::<_, ()>(Value::from(made.get()))
        };
        assert_eq!(*catalog.cached("doc", &store, make).unwrap(), 1);
        assert_eq!(*catalog.cached("doc", &store, make).unwrap(), 1, "kept");
        catalog.invalidate();
        assert_eq!(
            *catalog.cached("doc", &store, make).unwrap(),
            2,
            "made again"
        );
        assert!(!catalog.active.load(Ordering::Acquire));
        let page = catalog
            .with_rows(&store, &routes, |rows| rows.page(&all))
            .unwrap();
        assert_eq!(page.total, 2);
    }
}
