//! What the `model` field of a request asks for: a tag query, a virtual
//! group, or a bare name. Parsing is purely syntactic; whether anything matches is the
//! table's business.

use std::collections::HashSet;
use std::fmt;

use crate::names::model_tags;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `tag:a,b,!c` or `tags:a,b,!c`: every positive tag, none of the negative ones.
    Tags { include: Vec<String>, exclude: Vec<String> },
    /// `auto:free` etc. — a virtual group name (the whole string, lower-cased, e.g. "auto:free").
    /// Any string starting with "auto:" is a Group.
    Group(String),
    /// Anything else: a bare name, resolved by the table (exact, alias, core name, then tags).
    Name(String),
}

/// Why a `model` value cannot be parsed; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// `s` without `prefix`, compared ASCII case-insensitively. `str::get` keeps this safe
/// when `prefix.len()` falls inside a multi-byte character of `s`.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Parses the `model` field.
///
/// - `tag:` / `tags:` (any case) starts a tag query: comma-separated items, each trimmed
///   and lower-cased; `!` (optionally followed by whitespace) marks a negative tag; empty
///   items are ignored; duplicates collapse, keeping first-seen order. Items are kept
///   verbatim otherwise: `tag:gpt-4o` asks for the single tag "gpt-4o" (which no model
///   has, since '-' splits model tags), because silently re-splitting it would turn a
///   typo into a much broader query.
/// - `auto:` (any case) names a virtual group; the whole string is lower-cased.
/// - anything else is a bare name, kept as given apart from surrounding whitespace.
///
/// Errors: an empty `model`; a tag query with no tags; one with only negative tags
/// (it would match almost every model, which is never what a client means); a `!` with
/// no tag after it (or a second `!`); a tag that is both wanted and excluded.
pub fn parse(model: &str) -> Result<Query, QueryError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(QueryError("model is empty".into()));
    }
    if let Some(rest) = strip_prefix_ci(model, "tags:").or_else(|| strip_prefix_ci(model, "tag:")) {
        return parse_tags(rest);
    }
    if strip_prefix_ci(model, "auto:").is_some() {
        return Ok(Query::Group(model.to_lowercase()));
    }
    Ok(Query::Name(model.to_string()))
}

fn parse_tags(list: &str) -> Result<Query, QueryError> {
    let mut include: Vec<String> = Vec::new();
    let mut exclude: Vec<String> = Vec::new();
    // Sets alongside the vectors keep de-duplication linear for very long queries.
    let mut seen_include: HashSet<String> = HashSet::new();
    let mut seen_exclude: HashSet<String> = HashSet::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (negative, tag) = match item.strip_prefix('!') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, item),
        };
        if tag.is_empty() {
            return Err(QueryError("'!' in a tag query must be followed by a tag".into()));
        }
        if tag.starts_with('!') {
            return Err(QueryError(format!("tag query item \"{item}\" has more than one '!'")));
        }
        let tag = tag.to_lowercase();
        let (list, seen) = if negative { (&mut exclude, &mut seen_exclude) } else { (&mut include, &mut seen_include) };
        if seen.insert(tag.clone()) {
            list.push(tag);
        }
    }
    if include.is_empty() && exclude.is_empty() {
        return Err(QueryError("tag query has no tags".into()));
    }
    if include.is_empty() {
        return Err(QueryError("a tag query needs at least one positive tag".into()));
    }
    if let Some(both) = include.iter().find(|t| seen_exclude.contains(*t)) {
        return Err(QueryError(format!("tag \"{both}\" is both required and excluded")));
    }
    Ok(Query::Tags { include, exclude })
}

/// the tag query a bare name falls back to: its model_tags (so "kimi-free" -> include [kimi, free]).
///
/// A name with no tags at all (empty, or only separators) gives an empty `include`;
/// callers must treat that as matching nothing, not as "every tag satisfied".
pub fn name_as_tags(name: &str) -> Query {
    Query::Tags { include: model_tags(name), exclude: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(include: &[&str], exclude: &[&str]) -> Query {
        Query::Tags {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn positive_and_negative_tags() {
        assert_eq!(parse("tag:free,qwen3,!local"), Ok(tags(&["free", "qwen3"], &["local"])));
    }

    #[test]
    fn prefix_is_case_insensitive_and_items_trimmed() {
        assert_eq!(parse("TAGS: Qwen3 , free"), Ok(tags(&["qwen3", "free"], &[])));
        assert_eq!(parse("tag: qwen3 , !free"), Ok(tags(&["qwen3"], &["free"])));
        assert_eq!(parse("Tag:x,! y"), Ok(tags(&["x"], &["y"])));
    }

    #[test]
    fn only_negative_is_an_error() {
        assert!(parse("tag:!local").is_err());
        assert_eq!(parse("tag:!local"), Err(QueryError("a tag query needs at least one positive tag".into())));
    }

    #[test]
    fn empty_tag_query_is_an_error() {
        assert_eq!(parse("tag:"), Err(QueryError("tag query has no tags".into())));
        assert!(parse("tags: , ,").is_err());
        assert!(parse("tag:a,!").is_err());
        assert!(parse("tag:a,! ").is_err());
        assert!(parse("tag:a,!!b").is_err());
    }

    #[test]
    fn contradictory_tag_is_an_error_naming_it() {
        let err = parse("tag:a,!a");
        assert!(matches!(&err, Err(QueryError(m)) if m.contains("\"a\"")));
        assert!(parse("tag:A,! a").is_err());
    }

    #[test]
    fn empty_items_ignored_and_duplicates_collapse() {
        assert_eq!(parse("tag:a,,b"), Ok(tags(&["a", "b"], &[])));
        assert_eq!(parse("tag:a,A, a ,!c,!C"), Ok(tags(&["a"], &["c"])));
    }

    #[test]
    fn tag_items_are_verbatim() {
        assert_eq!(parse("tag:GPT-4o"), Ok(tags(&["gpt-4o"], &[])));
        assert_eq!(parse("tag:qwen2.5"), Ok(tags(&["qwen2.5"], &[])));
    }

    #[test]
    fn groups() {
        assert_eq!(parse("auto:free"), Ok(Query::Group("auto:free".into())));
        assert_eq!(parse("Auto:Fast"), Ok(Query::Group("auto:fast".into())));
        assert_eq!(parse(" AUTO:x "), Ok(Query::Group("auto:x".into())));
    }

    #[test]
    fn bare_names() {
        assert_eq!(parse("gpt-4o"), Ok(Query::Name("gpt-4o".into())));
        assert_eq!(parse("  gpt-4o  "), Ok(Query::Name("gpt-4o".into())));
        assert_eq!(parse("Kimi-Free"), Ok(Query::Name("Kimi-Free".into())));
        assert_eq!(parse("qwen/qwen3:free"), Ok(Query::Name("qwen/qwen3:free".into())));
        // Only the exact prefixes count: "tagger:x" and "auto" are names.
        assert_eq!(parse("tagger:x"), Ok(Query::Name("tagger:x".into())));
        assert_eq!(parse("auto"), Ok(Query::Name("auto".into())));
    }

    #[test]
    fn bare_name_falls_back_to_its_tags() {
        assert_eq!(parse("kimi-free"), Ok(Query::Name("kimi-free".into())));
        assert_eq!(name_as_tags("kimi-free"), tags(&["kimi", "free"], &[]));
        assert_eq!(name_as_tags("qwen/qwen3:free"), tags(&["qwen", "qwen3", "free"], &[]));
        assert_eq!(name_as_tags(""), tags(&[], &[]));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert!(parse("").is_err());
        assert!(parse("   ").is_err());
        assert_eq!(parse("ta模"), Ok(Query::Name("ta模".into())));
        assert_eq!(parse("模型"), Ok(Query::Name("模型".into())));
        assert_eq!(parse("tag:模型,!Ω"), Ok(tags(&["模型"], &["ω"])));
        assert_eq!(parse("tagé:x"), Ok(Query::Name("tagé:x".into())));
        let long = "a,".repeat(100_000);
        assert_eq!(parse(&format!("tag:{long}")), Ok(tags(&["a"], &[])));
        let unique: String = (0..50_000).map(|i| format!("t{i},!n{i},")).collect();
        assert!(matches!(
            parse(&format!("tag:{unique}")),
            Ok(Query::Tags { include, exclude }) if include.len() == 50_000 && exclude.len() == 50_000
        ));
        let _ = parse(&"!".repeat(10_000));
        let _ = parse(&format!("tag:{}", "!".repeat(10_000)));
    }
}
