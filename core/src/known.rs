//! The built-in table of known models (`data/known_models.tsv`): parameter
//! counts, context lengths and quality that a model's name does not say.

use std::collections::HashMap;
use std::sync::OnceLock;

const DATA: &str = include_str!("../data/known_models.tsv");

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Known {
    pub params_b: Option<f64>,
    pub context: Option<u64>,
    pub quality: Option<f64>,
}

/// `.` and `-` are interchangeable in model names (`claude-3.5-sonnet`,
/// `claude-3-5-sonnet`).
fn normalize(core: &str) -> String {
    core.to_ascii_lowercase().replace('.', "-")
}

fn table() -> &'static HashMap<String, Known> {
    static TABLE: OnceLock<HashMap<String, Known>> = OnceLock::new();
    TABLE.get_or_init(|| {
        DATA.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut cols = l.split('\t');
                let name = cols.next()?.trim();
                let num = |s: Option<&str>| s.map(str::trim).filter(|s| *s != "-").and_then(|s| s.parse::<f64>().ok());
                let params_b = num(cols.next());
                let context = num(cols.next()).map(|c| c as u64);
                let quality = num(cols.next());
                Some((normalize(name), Known { params_b, context, quality }))
            })
            .collect()
    })
}

/// What the table knows about a model with this core name.
pub fn lookup(core: &str) -> Option<Known> {
    table().get(&normalize(core)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::core_name;

    #[test]
    fn table_parses_and_answers_by_core_name() {
        assert!(table().len() > 200);
        let k = lookup(&core_name("qwen/qwen3-235b-a22b:free")).unwrap();
        assert_eq!((k.params_b, k.context), (Some(235.0), Some(131072)));
        assert_eq!(lookup(&core_name("anthropic/claude-3-5-sonnet-20241022")).unwrap().context, Some(200000));
        assert_eq!(lookup(&core_name("claude-3.5-sonnet")).unwrap().context, Some(200000));
        assert!(lookup("gpt-4o").unwrap().quality > lookup("gpt-4o-mini").unwrap().quality);
        assert!(lookup("no-such-model").is_none());
        // Every row is well formed: a name and three columns.
        for l in DATA.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            assert_eq!(l.split('\t').count(), 4, "{l}");
        }
    }
}
