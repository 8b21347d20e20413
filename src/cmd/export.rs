//! `export` and `import`: moving recordings between the store and fixture
//! files, without loss, with progress and a one-line summary.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cmd::lint;
use crate::key::RequestKey;
use crate::record::recording::{Recording, RequestBody};
use crate::route::Route;
use crate::store::fixtures::{self, FixtureError};
use crate::store::{SledStore, StoreError};

/// Below this many recordings, progress is not worth printing.
const PROGRESS_MIN: usize = 200;

/// Which recordings to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this route: a name (`chat.completions`) or a path.
    pub route: Option<String>,
    /// Only this model.
    pub model: Option<String>,
}

impl From<&crate::cli::FilterArgs> for Filter {
    fn from(args: &crate::cli::FilterArgs) -> Filter {
        Filter {
            namespace: args.namespace.clone(),
            route: args.route.clone(),
            model: args.model.clone(),
        }
    }
}

impl Filter {
    /// True when `entry` passes every filter that is set.
    pub fn keeps(&self, entry: &Recording) -> bool {
        let r = &entry.meta.request;
        if self.namespace.as_ref().is_some_and(|ns| *ns != r.namespace) {
            return false;
        }
        if let Some(route) = &self.route {
            let method =
                http::Method::from_bytes(r.method.as_bytes()).unwrap_or(http::Method::POST);
            let name = Route::classify(&method, &r.path).map(Route::as_str);
            if name != Some(route.as_str()) && r.path != *route {
                return false;
            }
        }
        if let Some(model) = &self.model {
            let requested = match &r.body {
                RequestBody::Json(v) => v.get("model").and_then(|m| m.as_str()),
                _ => None,
            };
            if entry.meta.model.as_deref() != Some(model.as_str())
                && requested != Some(model.as_str())
            {
                return false;
            }
        }
        true
    }
}

/// What an export or import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files or entries written.
    pub written: usize,
    /// Already identical, left alone.
    pub unchanged: usize,
    /// Left out, with the reason: (what, why).
    pub skipped: Vec<(String, String)>,
}

impl Summary {
    /// The one-line summary.
    pub fn line(&self, verb: &str, place: &Path) -> String {
        format!(
            "{verb} {} recording(s) {} {}: {} written, {} unchanged, {} skipped",
            self.written + self.unchanged + self.skipped.len(),
            if verb == "exported" { "to" } else { "from" },
            place.display(),
            self.written,
            self.unchanged,
            self.skipped.len()
        )
    }
}

/// Why an export or import could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A fixture file or folder failed.
    #[error(transparent)]
    Fixture(#[from] FixtureError),
}

/// Progress on stderr: a rewritten line on a terminal, a line every few
/// thousand otherwise; nothing for small jobs.
struct Progress {
    verb: &'static str,
    total: usize,
    terminal: bool,
}

impl Progress {
    fn new(verb: &'static str, total: usize) -> Self {
        Progress {
            verb,
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn tick(&self, done: usize) {
        if self.total < PROGRESS_MIN {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.terminal && (done % 100 == 0 || done == self.total) {
            let _ = write!(err, "\r{} {done}/{}", self.verb, self.total);
            if done == self.total {
                let _ = writeln!(err);
            }
        } else if !self.terminal && (done % 5000 == 0 || done == self.total) {
            let _ = writeln!(err, "{} {done}/{}", self.verb, self.total);
        }
    }
}

/// Writes the store's recordings (those `filter` keeps) as fixture files
/// under `out`. A file whose text would not change is not touched; a
/// recording that holds credential-like text is refused.
pub fn export(store: &SledStore, out: &Path, filter: &Filter) -> Result<Summary, TransferError> {
    std::fs::create_dir_all(out).map_err(|source| FixtureError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let progress = Progress::new("exporting", store.len());
    let mut summary = Summary::default();
    let mut used: HashMap<PathBuf, String> = HashMap::new();
    for (done, item) in store.iter().enumerate() {
        progress.tick(done + 1);
        let entry = match item {
            Ok(entry) => entry,
            Err(error @ StoreError::Corrupt { .. }) => {
                summary
                    .skipped
                    .push(("(corrupt entry)".into(), error.to_string()));
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        if !filter.keeps(&entry) {
            continue;
        }
        let key = entry.key().expect("store keys are valid");
        let history = store.history(&key)?;
        let file = fixtures::to_fixture(&entry, &history);
        let value = serde_json::to_value(&file).expect("a fixture always serialises");
        if let Some(finding) = lint::scan(&value).first() {
            summary.skipped.push((
                entry.meta.key.clone(),
                format!(
                    "holds {} at {}; not exported (see `llmtape lint`)",
                    finding.what, finding.pointer
                ),
            ));
            continue;
        }
        let mut path = out.join(fixtures::relative_path(&entry));
        let taken_by_other = used.get(&path).is_some_and(|k| *k != entry.meta.key)
            || existing_key(&path).is_some_and(|k| k != entry.meta.key);
        if taken_by_other {
            path = path.with_file_name(format!("{}.json", entry.meta.key));
        }
        used.insert(path.clone(), entry.meta.key.clone());
        if fixtures::write_if_changed(&path, &fixtures::render(&file))? {
            summary.written += 1;
        } else {
            summary.unchanged += 1;
        }
    }
    Ok(summary)
}

/// The key recorded in an existing fixture file, if it is one.
fn existing_key(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    fixtures::parse(path, &text).ok().map(|f| f.key)
}

/// Loads every fixture under `dir` into the store. Invalid files are
/// skipped with their reason; recordings already identical are left alone.
pub fn import(store: &SledStore, dir: &Path) -> Result<Summary, TransferError> {
    let files = fixtures::fixture_files(dir)?;
    let progress = Progress::new("importing", files.len());
    let mut summary = Summary::default();
    for (done, path) in files.iter().enumerate() {
        progress.tick(done + 1);
        let (file, entry, history) = match fixtures::read_fixture(path) {
            Ok(loaded) => loaded,
            Err(error) => {
                summary
                    .skipped
                    .push((path.display().to_string(), error.to_string()));
                continue;
            }
        };
        let key = RequestKey::from_hex(&file.key).expect("read_fixture checked the key");
        let current = store.get(&key).ok().flatten();
        if current.as_ref() == Some(&entry) && store.history(&key)? == history {
            summary.unchanged += 1;
            continue;
        }
        store.replace(&key, &entry, &history)?;
        summary.written += 1;
    }
    store.flush()?;
    Ok(summary)
}
