//! Which requests are cached. Everything else passes through untouched:
//! files, batches, assistants' runs and the like are stateful, and caching
//! them would be wrong.

use http::Method;

/// A cached route. The name is used in logs (and, later, fixture paths).
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
}

impl Route {
    /// Classifies a request; `None` means "pass through, never cache".
    ///
    /// Besides `/v1/...`, Azure OpenAI's forms are recognised:
    /// `/openai/deployments/{name}/{op}` and `/openai/v1/{op}`, with
    /// `?api-version=` kept in the key through the query string.
    pub fn classify(method: &Method, path: &str) -> Option<Route> {
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
            (&Method::GET, "models") => Some(Route::Models),
            (&Method::GET, model) if model.starts_with("models/") && !model[7..].contains('/') => {
                Some(Route::Models)
            }
            _ => None,
        }
    }

    /// Short name: `chat.completions`, `embeddings`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat.completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Moderations => "moderations",
            Route::Models => "models",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_routes() {
        let post = Method::POST;
        assert_eq!(
            Route::classify(&post, "/v1/chat/completions"),
            Some(Route::ChatCompletions)
        );
        assert_eq!(
            Route::classify(&post, "/v1/completions"),
            Some(Route::Completions)
        );
        assert_eq!(
            Route::classify(&post, "/v1/embeddings"),
            Some(Route::Embeddings)
        );
        assert_eq!(
            Route::classify(&post, "/v1/responses"),
            Some(Route::Responses)
        );
        assert_eq!(
            Route::classify(&post, "/v1/moderations"),
            Some(Route::Moderations)
        );
        assert_eq!(
            Route::classify(&Method::GET, "/v1/models"),
            Some(Route::Models)
        );
        assert_eq!(
            Route::classify(&Method::GET, "/v1/models/gpt-4o"),
            Some(Route::Models)
        );
        assert_eq!(
            Route::classify(&post, "/openai/deployments/my-gpt/chat/completions"),
            Some(Route::ChatCompletions)
        );
        assert_eq!(
            Route::classify(&post, "/openai/v1/embeddings"),
            Some(Route::Embeddings)
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
        ] {
            assert_eq!(Route::classify(&method, path), None, "{method} {path}");
        }
    }
}
