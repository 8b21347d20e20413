//! `probe --html FILE`: the probe's JSON document as one self-contained
//! HTML file. The web view's style sheet and charts (`assets/ui/`) and the
//! report's script are inlined, the document is embedded as data, and a
//! CSP in the file forbids every fetch: it opens offline, from `file://`.
//!
//! What the report shows is drawn by `assets/ui/report.js` from the same
//! document `probe --json` prints.

use serde_json::Value;

const STYLE: &str = include_str!("../../../assets/ui/app.css");
const CHARTS: &str = include_str!("../../../assets/ui/charts.js");
const REPORT: &str = include_str!("../../../assets/ui/report.js");

/// Nothing from anywhere: only the inlined script and style run, images
/// only from `data:`.
const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:";

/// Text for HTML content or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside a `<script>` element: `<`, `>` and `&` only
/// occur inside JSON strings, where their `\u` escapes mean the same, so
/// no `</script>` in an answer can end the element early.
fn script_json(doc: &Value) -> String {
    doc.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The report for a `probe --json` document.
pub fn report(doc: &Value) -> String {
    let title = format!(
        "llmtape probe: {} x {} {}{}",
        doc["requests"],
        doc["method"].as_str().unwrap_or(""),
        doc["upstream"].as_str().unwrap_or(""),
        doc["path"].as_str().unwrap_or("")
    );
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{STYLE}</style>
</head>
<body>
<header class="top"><div class="brand"><span class="logo"></span> llmtape probe</div></header>
<main id="report" data-testid="report"><noscript>This report draws its tables and chart with JavaScript; the data is in the probe-data element of this file.</noscript></main>
<footer class="foot">written by <code>llmtape probe --html</code>; the same data as <code>probe --json</code>, in this one file</footer>
<script type="application/json" id="probe-data">{data}</script>
<script>
{CHARTS}</script>
<script>
{REPORT}</script>
</body>
</html>
"#,
        csp = escape(CSP),
        title = escape(&title),
        data = script_json(doc),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_cannot_end_the_data_element_and_the_title_is_escaped() {
        let doc = serde_json::json!({
            "requests": 2, "method": "POST", "upstream": "http://h", "path": "/v1/<x>",
            "outputs": [{"text": "</script><script>alert(1)</script> & more", "count": 2}],
        });
        let html = report(&doc);
        assert_eq!(
            html.matches("</script>").count(),
            3,
            "only the three elements end"
        );
        assert!(html.contains("<title>llmtape probe: 2 x POST http://h/v1/&lt;x&gt;</title>"));
        let start = html.find(r#"id="probe-data">"#).unwrap() + 16;
        let end = start + html[start..].find("</script>").unwrap();
        let back: Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back, doc, "the embedded data reads back as the document");
    }

    #[test]
    fn the_inlined_assets_are_self_contained() {
        for (name, text) in [
            ("app.css", STYLE),
            ("charts.js", CHARTS),
            ("report.js", REPORT),
        ] {
            assert!(!text.contains("</script"), "{name} would end its element");
            assert!(!text.contains("</style"), "{name} would end its element");
            for origin in ["url(", "@import", "fetch(", "XMLHttpRequest", "src="] {
                assert!(!text.contains(origin), "{name} has {origin}");
            }
        }
    }
}
