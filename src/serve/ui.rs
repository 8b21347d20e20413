//! The web view's page and its assets, `GET /_llmtape/ui` (also
//! `/_llmtape/ui/` and `/_llmtape/ui/ASSET`): plain HTML, CSS and scripts
//! from `assets/ui/`, compiled into the binary, so the page works with no
//! network and never asks another origin for anything (its CSP forbids
//! it). The data it shows comes from the JSON endpoints under
//! `/_llmtape/api/`, which are not this module's.
//!
//! Access and the method (GET or HEAD) are checked by the admin
//! dispatcher (`crate::serve::admin`) before it calls [`asset`].

use http::header::{self, HeaderValue};
use http::Response;

use crate::body::{full, ProxyBody};

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

/// Whether `path` is one of the page's (`/_llmtape/ui`, `/_llmtape/ui/...`).
pub fn is_ui_path(path: &str) -> bool {
    path == UI_PATH || path.starts_with("/_llmtape/ui/")
}

/// The asset a path names, if any.
fn lookup(path: &str) -> Option<&'static Asset> {
    let name = match path.strip_prefix(UI_PATH)? {
        "" | "/" => "index.html",
        rest => rest.strip_prefix('/')?,
    };
    ASSETS.iter().find(|a| a.name == name)
}

/// The asset at `path` (a path [`is_ui_path`] accepts), with its content
/// type, `cache-control: no-cache` and the content security policy;
/// `None` when there is no such asset. The caller (the admin dispatcher)
/// has checked access and the method (GET or HEAD; hyper sends no body
/// for HEAD).
pub fn asset(path: &str) -> Option<Response<ProxyBody>> {
    let asset = lookup(path)?;
    let mut response = Response::new(full(bytes::Bytes::from_static(asset.bytes)));
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
            assert!(is_ui_path(path), "{path}");
            let response = asset(path).unwrap();
            assert_eq!(response.status(), http::StatusCode::OK, "{path}");
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "text/html; charset=utf-8"
            );
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&response, header::CONTENT_SECURITY_POLICY), CSP);
        }
    }

    #[test]
    fn assets_have_their_content_types_and_unknown_ones_are_none() {
        let kind = |path: &str| header(&asset(path).unwrap(), header::CONTENT_TYPE).to_string();
        assert_eq!(
            kind("/_llmtape/ui/app.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            kind("/_llmtape/ui/charts.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(kind("/_llmtape/ui/app.css"), "text/css; charset=utf-8");
        for path in [
            "/_llmtape/ui/nope.js",
            "/_llmtape/ui/../health",
            "/_llmtape/ui//app.js",
        ] {
            assert!(is_ui_path(path) && asset(path).is_none(), "{path}");
        }
        for path in ["/_llmtape/uix", "/_llmtape/health", "/_llmtape/api/stats"] {
            assert!(!is_ui_path(path) && asset(path).is_none(), "{path}");
        }
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
                assert!(
                    lookup(target).is_some(),
                    "index.html names {target}, not an asset"
                );
                named += 1;
            }
        }
        assert_eq!(named, 3, "the style sheet and the two scripts");
        for a in ASSETS {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for origin in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "fetch(\"http",
            ] {
                assert!(!text.contains(origin), "{} has {origin}", a.name);
            }
        }
    }
}
