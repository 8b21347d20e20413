//! `[prices]`: what a model's tokens cost, in USD per million tokens, so
//! the hits llmtape serves can be counted as money saved.
//!
//! A model name matches its own entry, else (a dated snapshot such as
//! `gpt-4o-2024-08-06` or `claude-sonnet-4-5-20250929`) the entry of its
//! base name. The TOML values are checked here, one problem per line,
//! naming the key and the fix.

use std::collections::BTreeMap;

/// The keys a model's price takes.
const FIELDS: [&str; 2] = ["input", "output"];

/// What one model's tokens cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// USD per million input (prompt) tokens.
    pub input: f64,
    /// USD per million output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, in USD.
    pub fn cost(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input + output as f64 * self.output) / 1_000_000.0
    }
}

/// `[prices]`, by model name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    by_model: BTreeMap<String, Price>,
}

impl Prices {
    /// Prices from `(model, price)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (String, Price)>) -> Prices {
        Prices {
            by_model: entries.into_iter().collect(),
        }
    }

    /// The price of `model`: its own entry, else its base name's when it
    /// ends in a snapshot date (`-2024-08-06` or `-20250929`).
    pub fn of(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.by_model.get(model) {
            return Some(*price);
        }
        self.by_model.get(snapshot_base(model)?).copied()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }
}

/// `gpt-4o` for `gpt-4o-2024-08-06`, `claude-sonnet-4-5` for
/// `claude-sonnet-4-5-20250929`; `None` for a name without a date.
fn snapshot_base(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // OpenAI: -YYYY-MM-DD
    if model.len() > 11 {
        let (base, date) = model.split_at(model.len() - 11);
        let parts: Vec<&str> = date.split('-').collect();
        if let ["", y, m, d] = parts.as_slice() {
            if y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d) {
                return Some(base);
            }
        }
    }
    // Anthropic: -YYYYMMDD
    let (base, date) = model.rsplit_once('-')?;
    (date.len() == 8 && digits(date) && !base.is_empty()).then_some(base)
}

/// Validates `[prices]` as written; every problem goes to `problems`.
pub(super) fn prices_from_raw(raw: toml::Table, problems: &mut Vec<String>) -> Prices {
    let example =
        "write e.g. \"gpt-4o-mini\" = { input = 0.15, output = 0.60 } (USD per million tokens)";
    let mut by_model = BTreeMap::new();
    for (model, value) in raw {
        let name = format!("prices.\"{model}\"");
        let Some(table) = value.as_table() else {
            problems.push(format!(
                "{name}: must be a table of input and output prices; {example}"
            ));
            continue;
        };
        for key in table.keys() {
            if !FIELDS.contains(&key.as_str()) {
                problems.push(format!(
                    "{name}: unknown key `{key}`; a price has `input` and `output` only"
                ));
            }
        }
        let mut field = |field: &str| -> Option<f64> {
            let number = match table.get(field) {
                None => {
                    problems.push(format!("{name}.{field}: missing; {example}"));
                    return None;
                }
                Some(toml::Value::Float(f)) => *f,
                Some(toml::Value::Integer(i)) => *i as f64,
                Some(other) => {
                    problems.push(format!(
                        "{name}.{field}: {other} is not a number; {example}"
                    ));
                    return None;
                }
            };
            if !number.is_finite() || number < 0.0 {
                problems.push(format!(
                    "{name}.{field}: {number} is not a price; write a number of USD per million tokens, 0 or more"
                ));
                return None;
            }
            Some(number)
        };
        let input = field("input");
        let output = field("output");
        if let (Some(input), Some(output)) = (input, output) {
            by_model.insert(model, Price { input, output });
        }
    }
    Prices { by_model }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn prices_are_read_and_snapshots_take_their_base_price() {
        let config = Config::from_toml(
            "[prices]\n\"gpt-4o\" = { input = 2.5, output = 10 }\n\"gpt-4o-2024-05-13\" = { input = 5.0, output = 15.0 }\n\"claude-sonnet-4-5\" = { input = 3.0, output = 15.0 }\n",
        )
        .unwrap();
        let p = &config.prices;
        assert_eq!(
            p.of("gpt-4o"),
            Some(Price {
                input: 2.5,
                output: 10.0
            })
        );
        assert_eq!(p.of("gpt-4o-2024-08-06"), p.of("gpt-4o"), "dated snapshot");
        assert_eq!(p.of("gpt-4o-2024-05-13").unwrap().input, 5.0, "exact first");
        assert_eq!(
            p.of("claude-sonnet-4-5-20250929"),
            p.of("claude-sonnet-4-5")
        );
        assert_eq!(p.of("gpt-4o-mini"), None, "no prefix matching");
        assert_eq!(p.of("gpt-4o-2024"), None);
        assert!(Config::defaults().prices.is_empty());
        let cost = p.of("gpt-4o").unwrap().cost(1_000_000, 500_000);
        assert!((cost - 7.5).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn bad_prices_are_one_line_errors_naming_the_key() {
        let err = Config::from_toml(
            "[prices]\n\"a\" = { input = -1, output = 1 }\n\"b\" = { input = \"cheap\", output = 1 }\n\"c\" = 3\n\"d\" = { input = 1 }\n\"e\" = { input = 1, output = 1, cached = 0.5 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "{err}");
        for part in [
            "prices.\"a\".input: -1 is not a price",
            "prices.\"b\".input: \"cheap\" is not a number",
            "prices.\"c\": must be a table",
            "prices.\"d\".output: missing",
            "prices.\"e\": unknown key `cached`",
        ] {
            assert!(err.contains(part), "{part} in {err}");
        }
    }
}
