//! The web view's page and its assets, `GET /_llmtape/ui` (also
//! `/_llmtape/ui/` and `/_llmtape/ui/ASSET`): plain HTML, CSS and scripts
//! from `assets/ui/`, compiled into the binary, so the page works with no
//! network and never asks another origin for anything (its CSP forbids
//! it). The data it shows comes from the JSON endpoints under
//! `/_llmtape/api/`, which are not this module's.
//!
//! Access is checked by the admin dispatcher (`crate::serve::admin`)
//! before it calls [`asset`].

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::body::{full, json_response, ProxyBody};

/// Where the page lives.
pub const UI_PATH: &str = "/_llmtape/ui";

/// The page's content security policy: its own origin only, no inline
/// script or style, images from itself or `data:` (the favicon); no
/// plugins, no framing by other sites, no `<base>` or form targets.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the page.
struct Asset {
    /// Its name after `/_llmtape/ui/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file the page is made of; `index.html` is the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/app.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/charts.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/ui/app.css"),
    },
];

/// The asset a path names: `Some(None)` for a path under the page that
/// names no asset, `None` for a path that is not the page's at all.
fn lookup(path: &str) -> Option<Option<&'static Asset>> {
    let rest = path.strip_prefix(UI_PATH)?;
    let name = match rest {
        "" | "/" => "index.html",
        _ => rest.strip_prefix('/')?,
    };
    Some(ASSETS.iter().find(|a| a.name == name))
}

/// Answers a request for the page or one of its assets, or `None` when
/// `path` is not under [`UI_PATH`] (the caller answers it). GET and HEAD
/// only; an unknown asset is a 404 in the admin error shape.
pub fn asset(method: &Method, path: &str) -> Option<Response<ProxyBody>> {
    let found = lookup(path)?;
    if method != Method::GET && method != Method::HEAD {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": {
                "message": format!("{path} is llmtape's web view: send GET"),
                "type": "invalid_request_error",
                "param": null,
                "code": "method_not_allowed",
            }})
            .to_string(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
    }
    let Some(asset) = found else {
        return Some(json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {
                "message": format!("the web view has no file {path}; open {UI_PATH}"),
                "type": "invalid_request_error",
                "param": null,
                "code": "unknown_asset",
            }})
            .to_string(),
        ));
    };
    let body = if method == Method::HEAD {
        full(bytes::Bytes::new())
    } else {
        full(bytes::Bytes::from_static(asset.bytes))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The assets change with the binary, so the browser must ask again
    // (cheap: they come from memory) rather than keep an old page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &Response<ProxyBody>, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    #[test]
    fn the_page_is_served_at_its_three_spellings() {
        for path in ["/_llmtape/ui", "/_llmtape/ui/", "/_llmtape/ui/index.html"] {
            let response = asset(&Method::GET, path).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), CSP);
        }
    }

    #[test]
    fn assets_have_their_content_types_and_unknown_ones_are_404() {
        let kind = |path: &str| {
            let response = asset(&Method::GET, path).unwrap();
            (
                response.status(),
                header(&response, header::CONTENT_TYPE).to_string(),
            )
        };
        assert_eq!(
            kind("/_llmtape/ui/app.js"),
            (StatusCode::OK, "text/javascript; charset=utf-8".into())
        );
        assert_eq!(
            kind("/_llmtape/ui/app.css"),
            (StatusCode::OK, "text/css; charset=utf-8".into())
        );
        assert_eq!(
            kind("/_llmtape/ui/nope.js"),
            (StatusCode::NOT_FOUND, "application/json".into())
        );
        assert_eq!(kind("/_llmtape/ui/../health").0, StatusCode::NOT_FOUND);
        assert!(asset(&Method::GET, "/_llmtape/uix").is_none());
        assert!(asset(&Method::GET, "/_llmtape/health").is_none());
    }

    #[test]
    fn only_get_and_head_are_answered() {
        let response = asset(&Method::POST, "/_llmtape/ui").unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&response, header::ALLOW), "GET, HEAD");
        let head = asset(&Method::HEAD, "/_llmtape/ui/app.js").unwrap();
        assert_eq!(head.status(), StatusCode::OK);
    }

    #[test]
    fn the_page_names_only_assets_that_exist_and_no_other_origin() {
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        let mut named = 0;
        for attr in ["src=\"", "href=\""] {
            for part in index.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                if target.starts_with('#') || target.starts_with("data:") {
                    continue;
                }
                let found = lookup(target).flatten();
                assert!(found.is_some(), "index.html names {target}, not an asset");
                named += 1;
            }
        }
        assert_eq!(named, 3, "the style sheet and the two scripts");
        for a in ASSETS {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for origin in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "@import",
                "fetch(\"http",
            ] {
                assert!(!text.contains(origin), "{} has {origin}", a.name);
            }
        }
    }
}
