//! Multipart form bodies, split into their parts so that the random
//! boundary a client picks does not change the key.

/// One part of a multipart body, without the random boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct FormPart {
    /// The part's headers, lowercased and sorted, one `name: value` each.
    pub headers: Vec<String>,
    /// The part's content.
    pub content: Vec<u8>,
}

/// The boundary of a `multipart/*` content type, if it is one.
pub(super) fn multipart_boundary(content_type: &str) -> Option<String> {
    let lower = content_type.to_ascii_lowercase();
    if !lower.trim_start().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("boundary"))
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Splits a multipart body into parts; `None` if it is not well formed.
pub(super) fn split_multipart(body: &[u8], boundary: &str) -> Option<Vec<FormPart>> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut rest = body;
    let start = find(rest, &delimiter)?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, &delimiter)?;
        let mut part = &rest[..end];
        part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let header_end = find(part, b"\r\n\r\n")?;
        let mut headers: Vec<String> = String::from_utf8_lossy(&part[..header_end])
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()),
                None => l.trim().to_string(),
            })
            .collect();
        headers.sort();
        parts.push(FormPart {
            headers,
            content: part[header_end + 4..].to_vec(),
        });
        rest = &rest[end + delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use crate::key::{Canonical, KeyRules, RequestParts};

    fn rules() -> KeyRules {
        KeyRules {
            presets: crate::key::DEFAULT_PRESETS.to_vec(),
            ignore_fields: vec!["/user".into()],
            per_credential: false,
        }
    }

    #[test]
    fn multipart_bodies_are_keyed_by_their_parts_not_the_boundary() {
        let form = |boundary: &str| {
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--{b}--\r\n",
                b = boundary
            )
        };
        let key = |boundary: &str, body: &str| {
            let ct = format!("multipart/form-data; boundary={boundary}");
            Canonical::new(
                &RequestParts {
                    method: "POST",
                    path: "/v1/audio/transcriptions",
                    query: None,
                    content_type: Some(&ct),
                    body: body.as_bytes(),
                    namespace: None,
                    credential: None,
                    anthropic_version: None,
                    anthropic_beta: Vec::new(),
                },
                &rules(),
            )
            .key()
        };
        let a = key("aaaa", &form("aaaa"));
        let b = key("bbbbbb", &form("bbbbbb"));
        assert_eq!(a, b);
        let changed = form("cccc").replace("whisper-1", "whisper-2");
        assert_ne!(a, key("cccc", &changed));
    }
}
