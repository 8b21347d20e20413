//! The commands that read or change recordings, as one value ([`Job`]) run
//! by one function ([`run`]) on whatever tier it is given: the store or
//! fixtures folder the dispatcher opened, or, while a `serve` holds the
//! store, that server's own tier, where [`Runner`] runs the job the
//! command line sent (`crate::serve::admin_commands`). One code path, so
//! the output cannot differ between the two.
//!
//! Paths in a job are kept as the user typed them (reports print them so);
//! a server resolves them against the caller's directory, sent along.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cmd::filter::Filter;
use crate::cmd::listing::Listing;
use crate::cmd::paint::Terminal;
use crate::cmd::{audit, export, import, ls, prune, rekey, rm, share, show, stats, verify};
use crate::config::{Config, RemoteConfig};
use crate::error::CommandError;
use crate::key::RequestKey;
use crate::record::recording::Recording;
use crate::serve::admin::{CommandRunner, Reply};
use crate::serve::metrics::LiveStats;
use crate::store::{forward_reads, forward_replace_remove, Tier, TierError};

/// The version of [`Request`]'s JSON: a server that reads another refuses
/// the job instead of misreading it.
pub const JOB_VERSION: u32 = 1;

/// A command on recordings, with its options.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// `llmtape ls`
    Ls(ls::Options),
    /// `llmtape show`
    Show(show::Options),
    /// `llmtape audit`
    Audit(audit::Options),
    /// `llmtape export`
    Export {
        /// The folder, as typed.
        out: PathBuf,
        /// Which recordings.
        filter: Filter,
    },
    /// `llmtape import`
    Import {
        /// The folder, as typed.
        dir: PathBuf,
    },
    /// `llmtape rm`
    Rm(rm::Options),
    /// `llmtape prune`
    Prune(prune::Options),
    /// `llmtape rekey`
    Rekey(rekey::Options),
    /// `llmtape verify`
    Verify(verify::Options),
    /// `llmtape push`
    Push {
        /// The shared store.
        remote: RemoteConfig,
    },
    /// `llmtape pull`
    Pull {
        /// The shared store.
        remote: RemoteConfig,
    },
    /// `llmtape stats`
    Stats(stats::Options),
}

/// Which recordings a job opens when it runs offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opens {
    /// The fixtures folder if one is given, else the existing store.
    Recordings,
    /// The existing store, even with `--fixtures` (`export`).
    Store,
    /// The store, created if missing (`import`).
    NewStore,
}

impl Job {
    /// What the dispatcher opens for it.
    pub fn opens(&self) -> Opens {
        match self {
            Job::Export { .. } => Opens::Store,
            Job::Import { .. } | Job::Pull { .. } => Opens::NewStore,
            Job::Ls(_)
            | Job::Show(_)
            | Job::Audit(_)
            | Job::Rm(_)
            | Job::Prune(_)
            | Job::Rekey(_)
            | Job::Verify(_)
            | Job::Push { .. }
            | Job::Stats(_) => Opens::Recordings,
        }
    }
}

/// A job as the command line sends it to a running `serve`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// [`JOB_VERSION`].
    pub llmtape_job: u32,
    /// The job.
    pub job: Job,
    /// The caller's stdout, for the report's looks.
    pub terminal: Terminal,
    /// The caller's directory: relative paths in the job start there.
    pub cwd: PathBuf,
    /// The store as the caller names it, so reports name it the same way
    /// with or without the server.
    pub location: PathBuf,
}

/// Runs `job` on `tier`: its report to `out`, warnings and skipped items
/// to `err`. `cwd` is where relative paths start (`None`: this process's
/// directory).
pub async fn run(
    job: &Job,
    tier: &dyn Tier,
    config: &Config,
    terminal: &Terminal,
    cwd: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let resolve = |path: &Path| match cwd {
        Some(cwd) => cwd.join(path),
        None => path.to_path_buf(),
    };
    match job {
        Job::Ls(options) => {
            let listing = Listing::read(tier, false, err)?;
            ls::run(&listing, options, terminal, out)
        }
        Job::Show(options) => {
            let listing = Listing::read(tier, true, err)?;
            show::run(&listing, options, out)
        }
        Job::Audit(options) => {
            let listing = Listing::read(tier, true, err)?;
            audit::run(&listing, options, terminal, out)
        }
        Job::Export { out: dir, filter } => {
            let summary = export::export(tier, &resolve(dir), filter)?;
            summary.report("exported", dir, out, err)
        }
        Job::Import { dir } => {
            let summary = import::import(tier, &resolve(dir))?;
            summary.report("imported", dir, out, err)
        }
        Job::Rm(options) => rm::run(tier, options, out),
        Job::Stats(options) => stats::run(tier, &config.prices, options, out, err),
        Job::Prune(options) => prune::run(tier, options, std::time::SystemTime::now(), out),
        Job::Rekey(options) => rekey::run(tier, config, options, out, err),
        Job::Push { remote } => share::push(tier, remote, out).await,
        Job::Pull { remote } => share::pull(tier, remote, config.store.history, out).await,
        Job::Verify(options) => {
            let all_same = verify::run(config, tier, options, terminal, out).await?;
            tier.flush()?;
            if all_same {
                Ok(())
            } else {
                Err(CommandError::Incomplete(
                    "some answers differ from their recordings".into(),
                ))
            }
        }
    }
}

/// Runs the jobs a running `serve` is sent, with that server's
/// configuration (`verify` asks its upstream).
pub struct Runner {
    config: Config,
}

impl Runner {
    /// A runner for a server started with `config`.
    pub fn new(config: Config) -> Runner {
        Runner { config }
    }
}

impl CommandRunner for Runner {
    fn run(&self, request: &[u8], tier: &dyn Tier) -> Reply {
        self.run_with(request, tier, None)
    }

    fn run_live(&self, request: &[u8], tier: &dyn Tier, live: LiveStats) -> Reply {
        self.run_with(request, tier, Some(live))
    }
}

impl Runner {
    /// Runs a job; `stats` gets the server's `live` counters.
    fn run_with(&self, request: &[u8], tier: &dyn Tier, live: Option<LiveStats>) -> Reply {
        let mut request: Request = match serde_json::from_slice(request) {
            Ok(request) => request,
            Err(error) => {
                return Reply::failed(
                    2,
                    format!("the running llmtape serve cannot read this command ({error}); is it another llmtape version? stop it and run the command again"),
                )
            }
        };
        if request.llmtape_job != JOB_VERSION {
            return Reply::failed(
                2,
                format!(
                    "the running llmtape serve reads commands of version {JOB_VERSION}, not {}; stop it and run the command again",
                    request.llmtape_job
                ),
            );
        }
        if let (Job::Stats(options), Some(live)) = (&mut request.job, live) {
            options.live = Some(live);
        }
        let tier = Named {
            tier,
            location: &request.location,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // A blocking thread of the server's runtime: verify's upstream
        // calls run on that runtime.
        let result = tokio::runtime::Handle::current().block_on(run(
            &request.job,
            &tier,
            &self.config,
            &request.terminal,
            Some(&request.cwd),
            &mut out,
            &mut err,
        ));
        let (exit_code, error) = match result {
            Ok(()) => (0, None),
            Err(error) => (error.code(), Some(error.to_string())),
        };
        Reply {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            exit_code,
            error,
        }
    }
}

/// A tier under the name the caller knows it by.
struct Named<'a> {
    tier: &'a dyn Tier,
    location: &'a Path,
}

impl Tier for Named<'_> {
    forward_reads!(inner);
    forward_replace_remove!(inner);

    fn put(
        &self,
        key: &RequestKey,
        recording: &Recording,
        history: usize,
        replace: bool,
    ) -> Result<bool, TierError> {
        self.tier.put(key, recording, history, replace)
    }

    fn location(&self) -> &Path {
        self.location
    }
}

impl Named<'_> {
    fn inner(&self) -> &dyn Tier {
        self.tier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::recording::test_entry;
    use crate::store::SledStore;

    fn request(job: Job, location: &str) -> Vec<u8> {
        serde_json::to_vec(&Request {
            llmtape_job: JOB_VERSION,
            job,
            terminal: Terminal::plain(),
            cwd: PathBuf::from("/nowhere"),
            location: PathBuf::from(location),
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_served_job_prints_what_it_prints_offline_under_the_callers_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let hex = "ab".repeat(32);
        let entry = test_entry(&hex, "{}", "fp", Some("m"), "2026-01-01T00:00:00.000Z");
        store.put(&entry.key(), &entry, 5).unwrap();
        let config = Config::defaults();
        let named = Named {
            tier: &store,
            location: Path::new("my/store"),
        };
        let show = Job::Show(show::Options {
            key_prefix: "ef".into(),
            json: false,
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let offline = run(
            &show,
            &named,
            &config,
            &Terminal::plain(),
            None,
            &mut out,
            &mut err,
        )
        .await
        .unwrap_err();

        let runner = Runner::new(config);
        let served = {
            let store = store.clone();
            let body = request(show, "my/store");
            tokio::task::spawn_blocking(move || runner.run(&body, &store))
                .await
                .unwrap()
        };
        assert_eq!(served.error, Some(offline.to_string()));
        assert_eq!(served.exit_code, 1);
        assert_eq!(
            served.error.as_deref(),
            Some("no recording has a key starting with ef in my/store")
        );

        let runner = Runner::new(Config::defaults());
        let ls = request(
            Job::Ls(ls::Options {
                json: false,
                routes: Default::default(),
            }),
            "my/store",
        );
        let served = tokio::task::spawn_blocking(move || runner.run(&ls, &store))
            .await
            .unwrap();
        assert_eq!((served.exit_code, served.error), (0, None));
        assert!(
            served.stdout.starts_with("abababababababab  2026-01-01"),
            "{}",
            served.stdout
        );
    }

    #[test]
    fn a_request_it_cannot_read_is_refused_with_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let runner = Runner::new(Config::defaults());
        let reply = runner.run(b"{\"job\":1}", &store);
        assert_eq!(reply.exit_code, 2);
        assert!(reply.error.unwrap().contains("cannot read this command"));
        let mut future: serde_json::Value =
            serde_json::from_slice(&request(Job::Rm(rm::Options::default()), "s")).unwrap();
        future["llmtape_job"] = 2.into();
        let reply = runner.run(future.to_string().as_bytes(), &store);
        assert_eq!(reply.exit_code, 2);
        assert!(reply.error.unwrap().contains("not 2"));
    }
}
