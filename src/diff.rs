//! Differences between recorded requests: which JSON paths differ.
//!
//! Used to explain a replay miss ("the nearest recording differs at
//! `/messages/2/content` and `/seed`"). Pure functions over values.

use serde_json::Value;

/// At most this many paths are collected; past it the answer is "very
/// different" anyway and more would only bloat error messages.
pub const MAX_PATHS: usize = 64;

/// JSON pointers (RFC 6901) at which `a` and `b` differ, in document order,
/// at most [`MAX_PATHS`]. A key present on one side only, an array element
/// past the other's end, and a changed scalar each count as one path.
pub fn differing_paths(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(a, b, &mut String::new(), &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
    if out.len() >= MAX_PATHS {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let len = path.len();
                push_token(path, k);
                match y.get(k) {
                    Some(vb) => walk(va, vb, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                let len = path.len();
                push_token(path, k);
                out.push(path.clone());
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(va, vb, path, out),
                    _ => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            if crate::key::canonical_json(a) != crate::key::canonical_json(b) && x != y {
                out.push(root(path));
            }
        }
        _ if a == b => {}
        _ => out.push(root(path)),
    }
}

fn push_token(path: &mut String, key: &str) {
    path.push('/');
    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
}

fn root(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_differing_path() {
        let a = json!({"model": "m", "seed": 1, "messages": [{"role": "user", "content": "a"}], "x/y": 1});
        let b = json!({"model": "m", "seed": 2, "messages": [{"role": "user", "content": "b"}, {"role": "user"}], "extra": true});
        assert_eq!(
            differing_paths(&a, &b),
            vec![
                "/seed",
                "/messages/0/content",
                "/messages/1",
                "/x~1y",
                "/extra"
            ]
        );
    }

    #[test]
    fn equal_numbers_in_other_spellings_do_not_differ() {
        let a: Value = serde_json::from_str(r#"{"t": 1}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"t": 1.0}"#).unwrap();
        assert!(differing_paths(&a, &b).is_empty());
        assert_eq!(differing_paths(&json!(1), &json!("1")), vec!["/"]);
    }
}
