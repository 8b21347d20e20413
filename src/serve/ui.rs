//! The web view's page and its assets, `GET /_llmtape/ui`, `/_llmtape/ui/`
//! and `/_llmtape/ui/ASSET`: compiled into the binary, served under the
//! admin access rules (`crate::serve::admin` checks them and routes the
//! paths here). The page reads the JSON endpoints of
//! `crate::serve::ui_api`.
//!
//! The page lands here (branch `ui-page`); until it does, no asset exists
//! and the paths answer 404.

use http::Response;

use crate::body::ProxyBody;

/// Whether `path` is one of the page's (`/_llmtape/ui`, `/_llmtape/ui/...`).
pub fn is_ui_path(path: &str) -> bool {
    path == "/_llmtape/ui" || path.starts_with("/_llmtape/ui/")
}

/// The asset at `path` (a path [`is_ui_path`] accepts), with its content
/// type, `cache-control: no-cache` and the content security policy;
/// `None` when there is no such asset.
pub fn asset(path: &str) -> Option<Response<ProxyBody>> {
    let _ = path;
    None
}
