//! Which requests are cached, and under which route name.
//!
//! The built-in list ([`Route`]) holds the OpenAI routes whose answer is
//! reproducible, under `/v1/` and Azure OpenAI's forms, and Anthropic's
//! Messages API (`/v1/messages`, `/v1/messages/count_tokens`); a
//! request's [`Dialect`] says which API it speaks (its upstream and the
//! shape of llmtape's errors). Everything else
//! passes through untouched: files, batches, assistants' runs and the like
//! are stateful, and caching them would be wrong. `[routes]` in the config
//! ([`Routes`]) adds routes to cache and takes built-in ones out, as
//! [`RoutePattern`]s (`METHOD /path`, a trailing `*` for a prefix).
//!
//! A leaf: knows methods and paths, nothing of bodies, keys or the store.

use std::fmt;

use http::Method;

/// A built-in cached route. The name is used in logs, `ls`, `key explain`
/// and fixture paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/moderations`
    Moderations,
    /// `GET /v1/models` and `GET /v1/models/{id}`
    Models,
    /// `POST /v1/audio/transcriptions` (multipart)
    AudioTranscriptions,
    /// `POST /v1/audio/translations` (multipart)
    AudioTranslations,
    /// `POST /v1/audio/speech` (a binary answer)
    AudioSpeech,
    /// `POST /v1/images/generations`
    ImageGenerations,
    /// `POST /v1/images/edits` (multipart)
    ImageEdits,
    /// `POST /v1/images/variations` (multipart)
    ImageVariations,
    /// `POST /v1/messages` (Anthropic Messages)
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic)
    MessagesCountTokens,
}

impl Route {
    /// Classifies a request by the built-in list alone; `None` means "pass
    /// through, never cache" (unless `[routes] cache` says otherwise, see
    /// [`Routes::classify`]).
    ///
    /// Besides `/v1/...`, Azure OpenAI's forms are recognised:
    /// `/openai/deployments/{name}/{op}` and `/openai/v1/{op}`, with
    /// `?api-version=` kept in the key through the query string.
    pub fn classify(method: &Method, path: &str) -> Option<Route> {
        // Anthropic's routes exist under `/v1/` only, never in Azure's forms.
        match (method, path.trim_end_matches('/')) {
            (&Method::POST, "/v1/messages") => return Some(Route::Messages),
            (&Method::POST, "/v1/messages/count_tokens") => {
                return Some(Route::MessagesCountTokens)
            }
            _ => {}
        }
        let op = if let Some(rest) = path.strip_prefix("/v1/") {
            rest
        } else if let Some(rest) = path.strip_prefix("/openai/v1/") {
            rest
        } else if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let (deployment, op) = rest.split_once('/')?;
            if deployment.is_empty() {
                return None;
            }
            op
        } else {
            return None;
        };
        let op = op.trim_end_matches('/');
        match (method, op) {
            (&Method::POST, "chat/completions") => Some(Route::ChatCompletions),
            (&Method::POST, "completions") => Some(Route::Completions),
            (&Method::POST, "embeddings") => Some(Route::Embeddings),
            (&Method::POST, "responses") => Some(Route::Responses),
            (&Method::POST, "moderations") => Some(Route::Moderations),
            (&Method::POST, "audio/transcriptions") => Some(Route::AudioTranscriptions),
            (&Method::POST, "audio/translations") => Some(Route::AudioTranslations),
            (&Method::POST, "audio/speech") => Some(Route::AudioSpeech),
            (&Method::POST, "images/generations") => Some(Route::ImageGenerations),
            (&Method::POST, "images/edits") => Some(Route::ImageEdits),
            (&Method::POST, "images/variations") => Some(Route::ImageVariations),
            (&Method::GET, "models") => Some(Route::Models),
            (&Method::GET, model) if model.starts_with("models/") && !model[7..].contains('/') => {
                Some(Route::Models)
            }
            _ => None,
        }
    }

    /// Short name: `chat.completions`, `audio.speech`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat.completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Moderations => "moderations",
            Route::Models => "models",
            Route::AudioTranscriptions => "audio.transcriptions",
            Route::AudioTranslations => "audio.translations",
            Route::AudioSpeech => "audio.speech",
            Route::ImageGenerations => "images.generations",
            Route::ImageEdits => "images.edits",
            Route::ImageVariations => "images.variations",
            Route::Messages => "messages",
            Route::MessagesCountTokens => "messages.count_tokens",
        }
    }
}

/// The API a request speaks: where it goes upstream and how llmtape's own
/// errors are shaped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// OpenAI-compatible (`upstream.url`; `{"error":{...}}`).
    #[default]
    OpenAi,
    /// Anthropic (`upstream.anthropic_url`;
    /// `{"type":"error","error":{...}}`).
    Anthropic,
}

impl Dialect {
    /// The dialect of a request: Anthropic for `/v1/messages` and every
    /// path under it (batches included, which pass through), and for any
    /// request carrying `anthropic-version` (the Anthropic SDKs send it on
    /// every call, `/v1/models` too); OpenAI otherwise.
    pub fn of(path: &str, has_anthropic_version: bool) -> Dialect {
        let messages = path
            .strip_prefix("/v1/messages")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if messages || has_anthropic_version {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// Methods a `[routes]` entry may name.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// One `[routes]` entry: `METHOD /path`, or `METHOD /prefix*` for every
/// path that starts with the prefix. Matched against the path as sent
/// (an Azure form is a path of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: Method,
    /// The path, without the trailing `*` of a prefix.
    path: String,
    prefix: bool,
    /// The path as written (`/v2/*`): the route's name.
    name: String,
}

/// Written as the entry it was parsed from (`POST /v2/*`), so commands sent
/// to a running server carry the caller's routes exactly.
impl serde::Serialize for RoutePattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{} {}", self.method, self.name))
    }
}

impl<'de> serde::Deserialize<'de> for RoutePattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entry = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RoutePattern::parse(&entry).map_err(serde::de::Error::custom)
    }
}

impl RoutePattern {
    /// Parses `METHOD /path` or `METHOD /prefix*`. The error names the
    /// entry and how to write it.
    pub fn parse(entry: &str) -> Result<RoutePattern, String> {
        const EXAMPLE: &str = "e.g. \"POST /v1/rerank\" or \"POST /v2/*\"";
        let words: Vec<&str> = entry.split_whitespace().collect();
        let (method, path) = match words[..] {
            [] => return Err(format!("{entry:?} is empty; write METHOD /path, {EXAMPLE}")),
            [path] if path.starts_with('/') => {
                return Err(format!(
                    "{entry:?} has no method; write it as \"POST {path}\" (or another method)"
                ))
            }
            [_] => return Err(format!("{entry:?} is not METHOD /path; write {EXAMPLE}")),
            [method, path] => (method, path),
            _ => {
                return Err(format!(
                    "{entry:?} has more than a method and a path; write METHOD /path, {EXAMPLE}"
                ))
            }
        };
        let method = METHODS
            .iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(method))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{entry:?}: {method:?} is not a method; use one of {}",
                    METHODS.map(|m| m.to_string()).join(", ")
                )
            })?;
        if !path.starts_with('/') {
            return Err(format!(
                "{entry:?}: the path must start with /; write \"{method} /{}\"",
                path.trim_start_matches('/')
            ));
        }
        if path.contains('?') {
            return Err(format!(
                "{entry:?}: a route is a path without a query (the query is part of the key); write \"{method} {}\"",
                &path[..path.find('?').unwrap_or(path.len())]
            ));
        }
        let (stem, prefix) = match path.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (path, false),
        };
        if stem.contains('*') {
            return Err(format!(
                "{entry:?}: * may only end the path, as a prefix, e.g. \"{method} {}*\"",
                &stem[..stem.find('*').unwrap_or(stem.len())]
            ));
        }
        Ok(RoutePattern {
            method,
            path: stem.to_string(),
            prefix,
            name: path.to_string(),
        })
    }

    /// True when a request with this method and path is on the route. An
    /// exact path also matches with a trailing `/`.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if *method != self.method {
            return false;
        }
        if self.prefix {
            path.starts_with(&self.path)
        } else {
            path == self.path || path.strip_suffix('/') == Some(self.path.as_str())
        }
    }

    /// The route's name: the path as written, e.g. `/v1/rerank`, `/v2/*`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.name)
    }
}

/// A cached route: built in, or the `i`th `[routes] cache` entry. Copy,
/// so the hit path carries it without allocating; [`Routes::name`] gives
/// its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    /// A built-in route.
    Builtin(Route),
    /// `[routes] cache[i]`.
    Custom(usize),
}

/// What the proxy caches: the built-in routes, minus the `[routes] bypass`
/// entries, plus the `[routes] cache` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Routes {
    /// More routes to record and replay.
    pub cache: Vec<RoutePattern>,
    /// Routes to pass through, even built-in ones.
    pub bypass: Vec<RoutePattern>,
}

impl Routes {
    /// The cached route a request is on; `None` means "pass through". A
    /// bypass entry wins over everything; a built-in route over a cache
    /// entry that also matches it.
    pub fn classify(&self, method: &Method, path: &str) -> Option<RouteId> {
        if self.bypass.iter().any(|p| p.matches(method, path)) {
            return None;
        }
        self.identify(method, path)
    }

    /// The route a request (or a recording's request) is on, whether or not
    /// a bypass entry passes it through now.
    pub fn identify(&self, method: &Method, path: &str) -> Option<RouteId> {
        if let Some(route) = Route::classify(method, path) {
            return Some(RouteId::Builtin(route));
        }
        self.cache
            .iter()
            .position(|p| p.matches(method, path))
            .map(RouteId::Custom)
    }

    /// The first bypass entry a request matches.
    pub fn bypassed_by(&self, method: &Method, path: &str) -> Option<&RoutePattern> {
        self.bypass.iter().find(|p| p.matches(method, path))
    }

    /// A route's name: `chat.completions` for a built-in one, the path as
    /// written for a `[routes] cache` entry.
    pub fn name(&self, id: RouteId) -> &str {
        match id {
            RouteId::Builtin(route) => route.as_str(),
            RouteId::Custom(i) => self.cache.get(i).map_or("-", RoutePattern::name),
        }
    }

    /// The name of the route a recorded request is on (`ls`, `show`), or
    /// `None` when it is on none.
    pub fn name_of(&self, method: &str, path: &str) -> Option<&str> {
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        self.identify(&method, path).map(|id| self.name(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_routes() {
        let post = Method::POST;
        for (path, route) in [
            ("/v1/chat/completions", Route::ChatCompletions),
            ("/v1/completions", Route::Completions),
            ("/v1/embeddings", Route::Embeddings),
            ("/v1/responses", Route::Responses),
            ("/v1/moderations", Route::Moderations),
            ("/v1/audio/transcriptions", Route::AudioTranscriptions),
            ("/v1/audio/translations", Route::AudioTranslations),
            ("/v1/audio/speech", Route::AudioSpeech),
            ("/v1/images/generations", Route::ImageGenerations),
            ("/v1/images/edits", Route::ImageEdits),
            ("/v1/images/variations", Route::ImageVariations),
            (
                "/openai/deployments/my-gpt/chat/completions",
                Route::ChatCompletions,
            ),
            ("/openai/v1/embeddings", Route::Embeddings),
            (
                "/openai/deployments/whisper/audio/transcriptions",
                Route::AudioTranscriptions,
            ),
            ("/openai/deployments/tts/audio/speech", Route::AudioSpeech),
            (
                "/openai/deployments/dalle/images/generations",
                Route::ImageGenerations,
            ),
            ("/openai/v1/images/edits", Route::ImageEdits),
            ("/v1/messages", Route::Messages),
            ("/v1/messages/", Route::Messages),
            ("/v1/messages/count_tokens", Route::MessagesCountTokens),
        ] {
            assert_eq!(Route::classify(&post, path), Some(route), "{path}");
        }
        assert_eq!(
            Route::classify(&Method::GET, "/v1/models"),
            Some(Route::Models)
        );
        assert_eq!(
            Route::classify(&Method::GET, "/v1/models/gpt-4o"),
            Some(Route::Models)
        );
    }

    #[test]
    fn stateful_and_unknown_routes_pass_through() {
        for (method, path) in [
            (Method::POST, "/v1/files"),
            (Method::POST, "/v1/batches"),
            (Method::GET, "/v1/chat/completions"),
            (Method::GET, "/v1/responses/resp_123"),
            (Method::DELETE, "/v1/models/ft-x"),
            (Method::POST, "/v1/threads/t/runs"),
            (Method::POST, "/openai/deployments//chat/completions"),
            (Method::POST, "/chat/completions"),
            (Method::GET, "/v1/audio/speech"),
            (Method::POST, "/v1/audio/voices"),
            (Method::POST, "/v1/images"),
            (Method::POST, "/v1/messages/batches"),
            (Method::GET, "/v1/messages"),
            (Method::POST, "/openai/v1/messages"),
            (Method::POST, "/openai/deployments/x/messages"),
        ] {
            assert_eq!(Route::classify(&method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn names_are_dotted_and_distinct() {
        let all = [
            Route::ChatCompletions,
            Route::Completions,
            Route::Embeddings,
            Route::Responses,
            Route::Moderations,
            Route::Models,
            Route::AudioTranscriptions,
            Route::AudioTranslations,
            Route::AudioSpeech,
            Route::ImageGenerations,
            Route::ImageEdits,
            Route::ImageVariations,
            Route::Messages,
            Route::MessagesCountTokens,
        ];
        let names: std::collections::BTreeSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| !n.contains(['/', ' '])));
    }

    #[test]
    fn the_dialect_follows_the_path_or_the_anthropic_version_header() {
        assert_eq!(Dialect::of("/v1/messages", false), Dialect::Anthropic);
        assert_eq!(
            Dialect::of("/v1/messages/batches/b1", false),
            Dialect::Anthropic
        );
        assert_eq!(Dialect::of("/v1/models", true), Dialect::Anthropic);
        assert_eq!(Dialect::of("/v1/models", false), Dialect::OpenAi);
        assert_eq!(Dialect::of("/v1/messagesx", false), Dialect::OpenAi);
        assert_eq!(Dialect::of("/v1/chat/completions", false), Dialect::OpenAi);
    }

    #[test]
    fn patterns_parse_exact_paths_and_prefixes() {
        let exact = RoutePattern::parse("POST /v1/rerank").unwrap();
        assert_eq!(exact.to_string(), "POST /v1/rerank");
        assert_eq!(exact.name(), "/v1/rerank");
        assert!(exact.matches(&Method::POST, "/v1/rerank"));
        assert!(exact.matches(&Method::POST, "/v1/rerank/"));
        assert!(!exact.matches(&Method::POST, "/v1/rerank2"));
        assert!(!exact.matches(&Method::POST, "/v1/rerank/x"));
        assert!(!exact.matches(&Method::GET, "/v1/rerank"));

        let prefix = RoutePattern::parse("  post   /v2/* ").unwrap();
        assert_eq!(prefix.to_string(), "POST /v2/*");
        assert_eq!(prefix.name(), "/v2/*");
        assert!(prefix.matches(&Method::POST, "/v2/score"));
        assert!(prefix.matches(&Method::POST, "/v2/a/b"));
        assert!(prefix.matches(&Method::POST, "/v2/"));
        assert!(!prefix.matches(&Method::POST, "/v2"));
        assert!(!prefix.matches(&Method::POST, "/v3/score"));

        let glued = RoutePattern::parse("GET /vendor*").unwrap();
        assert!(glued.matches(&Method::GET, "/vendor-x/y"));
    }

    #[test]
    fn malformed_patterns_name_the_entry_and_the_fix() {
        for (entry, needles) in [
            ("", &["\"\" is empty", "METHOD /path"][..]),
            ("/v1/rerank", &["has no method", "\"POST /v1/rerank\""]),
            ("rerank", &["is not METHOD /path"]),
            (
                "FETCH /v1/rerank",
                &["\"FETCH\" is not a method", "GET, POST"],
            ),
            (
                "POST v1/rerank",
                &["must start with /", "\"POST /v1/rerank\""],
            ),
            (
                "POST /v1/*/score",
                &["* may only end the path", "\"POST /v1/*\""],
            ),
            (
                "POST /v1/re*rank",
                &["* may only end the path", "\"POST /v1/re*\""],
            ),
            ("POST /v1/rerank extra", &["more than a method and a path"]),
            (
                "POST /v1/rerank?x=1",
                &["without a query", "\"POST /v1/rerank\""],
            ),
        ] {
            let error = RoutePattern::parse(entry).unwrap_err();
            assert!(error.contains(&format!("{entry:?}")), "{entry}: {error}");
            for needle in needles {
                assert!(error.contains(needle), "{entry}: {needle} in {error}");
            }
            assert!(!error.contains('\n'), "{error}");
        }
    }

    fn routes(cache: &[&str], bypass: &[&str]) -> Routes {
        let parse = |list: &[&str]| {
            list.iter()
                .map(|e| RoutePattern::parse(e).unwrap())
                .collect()
        };
        Routes {
            cache: parse(cache),
            bypass: parse(bypass),
        }
    }

    #[test]
    fn the_classifier_adds_cache_entries_and_removes_bypass_entries() {
        let post = Method::POST;
        let routes = routes(
            &["POST /v1/rerank", "POST /v2/*", "POST /v1/*"],
            &["POST /v1/moderations", "POST /v2/stateful"],
        );
        let name = |path: &str| routes.classify(&post, path).map(|id| routes.name(id));
        assert_eq!(name("/v1/chat/completions"), Some("chat.completions"));
        assert_eq!(name("/v1/audio/speech"), Some("audio.speech"));
        assert_eq!(name("/v1/rerank"), Some("/v1/rerank"));
        assert_eq!(name("/v2/score"), Some("/v2/*"));
        assert_eq!(name("/v1/other"), Some("/v1/*"), "a later prefix entry");
        assert_eq!(name("/v1/moderations"), None, "bypassed built-in route");
        assert_eq!(name("/v2/stateful"), None, "bypass wins over cache");
        assert_eq!(name("/v3/x"), None);
        assert_eq!(
            routes.classify(&Method::GET, "/v1/rerank"),
            None,
            "the method is part of the route"
        );
        assert_eq!(
            routes
                .bypassed_by(&post, "/v1/moderations")
                .map(|p| p.to_string()),
            Some("POST /v1/moderations".into())
        );
        assert_eq!(
            routes.name_of("POST", "/v1/moderations"),
            Some("moderations"),
            "a recording keeps its route's name"
        );
        assert_eq!(routes.name_of("POST", "/v2/x"), Some("/v2/*"));
        assert_eq!(routes.name_of("POST", "/v1/files/x"), Some("/v1/*"));
        assert_eq!(Routes::default().name_of("POST", "/v1/rerank"), None);
    }
}
