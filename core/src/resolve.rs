//! What may stand in `model`, resolved to ordered candidates.
//!
//! Routing and `explain` run this same code; explain only also collects what was
//! left out and why. In order:
//! 1. `tag:`/`tags:` queries: every positive tag, none of the negative ones;
//! 2. `auto:` groups;
//! 3. bare names: exact physical id on any channel, then per-channel aliases,
//!    then, for a name that is its own core name, every chat model with that
//!    core name — all three together, in that order;
//! 4. a bare name none of those know falls back to the tag query of its tags.
//!
//! Candidates come out in the table's preference order; scoring reorders them later.

use serde::Serialize;

use crate::error::{ascii_safe, RouterError};
use crate::names::{core_name, core_name_ref};
use crate::query::{name_as_tags, parse, Query};
use crate::table::{Candidate, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Exact,
    Alias,
    CoreName,
    Tags,
    NameAsTags,
    Group,
}

/// Something that matched part of the query but is not a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    pub channel: String,
    pub model: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub query: Query,
    /// The group the query named, if any.
    pub group: Option<String>,
    pub stages: Vec<Stage>,
    pub candidates: Vec<Candidate>,
    /// Filled only when explaining.
    pub excluded: Vec<Exclusion>,
}

/// How much work to do: routing stops at `limit` candidates and records nothing
/// else; explaining finds them all and records exclusions.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub limit: usize,
    pub explain: bool,
}

impl Mode {
    pub fn route(limit: usize) -> Self {
        Self { limit: limit.max(1), explain: false }
    }

    pub fn explain() -> Self {
        Self { limit: usize::MAX, explain: true }
    }
}

pub fn resolve(table: &Table, requested: &str, mode: Mode) -> Result<Resolution, RouterError> {
    let query = parse(requested).map_err(|e| RouterError::bad_request("invalid_model_query", e.0))?;
    // The query moves into the answer once it has been searched (no copy).
    let mut r = Resolution {
        query: Query::Name(String::new()),
        group: None,
        stages: Vec::new(),
        candidates: Vec::new(),
        excluded: Vec::new(),
    };
    search(table, requested, &query, mode, &mut r)?;
    r.query = query;
    Ok(r)
}

fn search(table: &Table, requested: &str, query: &Query, mode: Mode, r: &mut Resolution) -> Result<(), RouterError> {
    match query {
        Query::Tags { include, exclude } => {
            r.stages.push(Stage::Tags);
            tag_query(table, include, exclude, mode, r).map_err(|why| {
                RouterError::model_not_found(format!("no model matches \"{}\": {why}", ascii_safe(requested, 200)))
            })?;
        }
        Query::Group(name) => {
            let Some(group) = table.group(name) else {
                let known: Vec<&str> = table.groups().map(|g| g.name.as_str()).collect();
                return Err(RouterError::model_not_found(format!(
                    "unknown group \"{}\"; groups: {}",
                    ascii_safe(name, 100),
                    known.join(", ")
                )));
            };
            group_query(table, group, mode, r)?;
        }
        Query::Name(name) => {
            // A user group may have any name (`my_custom`): it wins over models.
            let group = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                table.group(&name.to_ascii_lowercase())
            } else {
                table.group(name)
            };
            if let Some(group) = group {
                return group_query(table, group, mode, r);
            }
            name_query(table, name, mode, r);
            if r.candidates.is_empty() {
                let Query::Tags { include, exclude } = name_as_tags(name) else {
                    return Err(not_served(requested, "it has no tags to search by"));
                };
                if include.is_empty() {
                    return Err(not_served(requested, "it has no tags to search by"));
                }
                r.stages.push(Stage::NameAsTags);
                let shown = format!("tag:{}", include.join(","));
                tag_query(table, &include, &exclude, mode, r)
                    .map_err(|why| not_served(requested, &format!("read as {shown}: {why}")))?;
            }
        }
    }
    Ok(())
}

fn group_query(table: &Table, group: &crate::table::Group, mode: Mode, r: &mut Resolution) -> Result<(), RouterError> {
    r.stages.push(Stage::Group);
    r.group = Some(group.name.clone());
    for c in group.candidates(table) {
        if !push(r, c, mode.limit) {
            break;
        }
    }
    if r.candidates.is_empty() {
        return Err(RouterError::model_not_found(format!(
            "group \"{}\" has no members: no channel serves a model it admits ({})",
            group.name, group.description
        )));
    }
    Ok(())
}

fn not_served(requested: &str, why: &str) -> RouterError {
    RouterError::model_not_found(format!(
        "model \"{}\" is not served by any channel, and {why} (see GET /v1/models)",
        ascii_safe(requested, 200)
    ))
}

fn push(r: &mut Resolution, c: Candidate, limit: usize) -> bool {
    if r.candidates.len() >= limit {
        return false;
    }
    if !r.candidates.contains(&c) {
        r.candidates.push(c);
    }
    true
}

/// [`push`] for a table entry, copying its name only when it is not a duplicate
/// (an exact id is usually also its own core-name variant).
fn push_entry(table: &Table, r: &mut Resolution, n: u32, limit: usize) -> bool {
    let Some(e) = table.entry(n) else {
        return true;
    };
    if r.candidates.len() >= limit {
        return false;
    }
    if !r.candidates.iter().any(|c| c.channel == e.channel && c.upstream_model == e.id) {
        r.candidates.push(Candidate { channel: e.channel, upstream_model: e.id.clone() });
    }
    true
}

fn name_query(table: &Table, name: &str, mode: Mode, r: &mut Resolution) {
    let exact = table.entries_for_model(name);
    if !exact.is_empty() {
        r.stages.push(Stage::Exact);
        for &n in exact {
            push_entry(table, r, n, mode.limit);
        }
    }
    let aliases = table.candidates_for_alias(name);
    if !aliases.is_empty() {
        r.stages.push(Stage::Alias);
        for c in aliases {
            push(r, c.clone(), mode.limit);
        }
    }
    // Only a name that is its own core name widens to its variants: asking for
    // `qwen/qwen3-235b-a22b:free` must not reach the paid variant.
    // (An exact id's core name was worked out when the table was built.)
    let core = match exact.first().and_then(|&n| table.entry(n)) {
        Some(e) => std::borrow::Cow::Borrowed(e.core.as_str()),
        None => core_name_ref(name),
    };
    if name.trim().bytes().map(|b| b.to_ascii_lowercase()).eq(core.bytes()) {
        let variants = table.entries_for_core(&core);
        if variants.iter().any(|&n| table.entry(n).is_some_and(|e| e.id != name)) {
            r.stages.push(Stage::CoreName);
        }
        for &n in variants {
            push_entry(table, r, n, mode.limit);
        }
    }
}

/// Strict tag matching. `Err` says which constraint emptied the result.
fn tag_query(
    table: &Table,
    include: &[String],
    exclude: &[String],
    mode: Mode,
    r: &mut Resolution,
) -> Result<(), String> {
    let mut inc = Vec::with_capacity(include.len());
    for t in include.iter().chain(exclude) {
        if table.tag_id(t).is_none() {
            return Err(format!("tag \"{}\" is unknown (no model or channel has it)", ascii_safe(t, 100)));
        }
    }
    for t in include {
        inc.extend(table.tag_id(t));
    }
    let exc: Vec<u32> = exclude.iter().filter_map(|t| table.tag_id(t)).collect();
    // Walk the rarest tag's list (already in preference order) and check the rest.
    let Some(&rarest) = inc.iter().min_by_key(|&&t| table.entries_with_tag(t).len()) else {
        return Err("a tag query needs at least one positive tag".into());
    };
    for &n in table.entries_with_tag(rarest) {
        let Some(e) = table.entry(n) else { continue };
        if !inc.iter().all(|t| e.tags.binary_search(t).is_ok()) {
            continue;
        }
        let channel = || table.channel(e.channel).map(|c| c.id.clone()).unwrap_or_default();
        if !e.chat {
            if mode.explain {
                r.excluded.push(Exclusion {
                    channel: channel(),
                    model: e.id.clone(),
                    reason: "not a chat model".into(),
                });
            }
            continue;
        }
        if let Some(&t) = exc.iter().find(|t| e.tags.binary_search(t).is_ok()) {
            if mode.explain {
                let reason = format!("has excluded tag \"{}\"", table.tag_name(t));
                r.excluded.push(Exclusion { channel: channel(), model: e.id.clone(), reason });
            }
            continue;
        }
        if !push_entry(table, r, n, mode.limit) {
            break;
        }
    }
    if r.candidates.is_empty() {
        return Err(why_empty(table, include, &inc, &exc));
    }
    Ok(())
}

/// Which constraint left nothing: the first positive tag whose addition empties the
/// set, else the negative tags. Counts walk the rarest tag's list, never the table,
/// so a stream of bad queries costs no more than good ones.
fn why_empty(table: &Table, names: &[String], inc: &[u32], exc: &[u32]) -> String {
    let count = |tags: &[u32], chat_only: bool| {
        let Some(&rarest) = tags.iter().min_by_key(|&&t| table.entries_with_tag(t).len()) else { return 0 };
        table
            .entries_with_tag(rarest)
            .iter()
            .filter_map(|&n| table.entry(n))
            .filter(|e| (!chat_only || e.chat) && tags.iter().all(|t| e.tags.binary_search(t).is_ok()))
            .count()
    };
    for k in 1..=inc.len() {
        if count(&inc[..k], false) == 0 {
            let so_far = names[..k].join(", ");
            return format!("no model has all of the tags {so_far}, though each tag exists");
        }
    }
    let any = count(inc, false);
    let chat = count(inc, true);
    if chat == 0 {
        return format!("the {any} models with tags {} are not chat models", names.join(", "));
    }
    let negatives: Vec<&str> = exc.iter().map(|&t| table.tag_name(t)).collect();
    format!(
        "all {chat} chat models with tags {} also have an excluded tag (!{})",
        names.join(", "),
        negatives.join(", !")
    )
}

/// The JSON `explain` returns: the parsed query, candidates in order with their
/// facts, and what was left out and why.
pub fn explain_json(table: &Table, requested: &str) -> serde_json::Value {
    let budget = 1 + table.routing.max_retry_attempts as usize;
    match resolve(table, requested, Mode::explain()) {
        Err(e) => serde_json::json!({
            "model": requested,
            "error": {"status": e.status, "code": e.code, "message": e.message},
        }),
        Ok(r) => {
            let mut excluded: Vec<serde_json::Value> = r
                .excluded
                .iter()
                .map(|x| serde_json::json!({"channel": x.channel, "model": x.model, "reason": x.reason}))
                .collect();
            // The order routing uses (without live health and speed data).
            let ranking = match crate::plan::rank(
                table,
                requested,
                r.clone(),
                &crate::score::PerfMap::default(),
                (&crate::health::HealthMap::default(), 0),
                0,
                true,
            ) {
                Ok(ranking) => ranking,
                Err(e) => {
                    return serde_json::json!({
                        "model": requested,
                        "error": {"status": e.status, "code": e.code, "message": e.message},
                    })
                }
            };
            for c in &ranking.filtered_out {
                if let Some(ch) = table.channel(c.channel) {
                    excluded.push(serde_json::json!({
                        "channel": ch.id, "model": c.upstream_model, "reason": "left out by routing.model_filters",
                    }));
                }
            }
            let strategy = ranking.strategy;
            let mut candidates = Vec::new();
            for (pos, ranked) in ranking.candidates.iter().enumerate() {
                let (c, f, s) = (&ranked.candidate, &ranked.facts, &ranked.score);
                let Some(ch) = table.channel(c.channel) else { continue };
                if pos >= budget {
                    excluded.push(serde_json::json!({
                        "channel": ch.id, "model": c.upstream_model,
                        "reason": format!("beyond the retry budget ({budget} attempts)"),
                    }));
                    continue;
                }
                let entry = table.entry_for(c);
                let tags: Vec<&str> =
                    entry.map(|e| e.tags.iter().map(|&t| table.tag_name(t)).collect()).unwrap_or_default();
                candidates.push(serde_json::json!({
                    "channel": ch.id,
                    "key": ch.key,
                    "provider": ch.provider,
                    "model": c.upstream_model,
                    "priority": ch.priority,
                    "weight": ch.weight,
                    "tags": tags,
                    "context_length": f.context,
                    "parameters_b": f.params_b,
                    "price_per_1m": {"input": f.price_in, "output": f.price_out},
                    "free": f.free,
                    "local": f.local,
                    "tools": entry.map(|e| e.tools),
                    "vision": entry.map(|e| e.vision),
                    "score": s.total,
                    "score_parts": s.parts,
                }));
            }
            let query = match &r.query {
                Query::Tags { include, exclude } => {
                    serde_json::json!({"kind": "tags", "include": include, "exclude": exclude})
                }
                Query::Group(g) => serde_json::json!({"kind": "group", "group": g}),
                Query::Name(n) => serde_json::json!({"kind": "name", "name": n, "core_name": core_name(n)}),
            };
            serde_json::json!({
                "model": requested,
                "query": query,
                "strategy": strategy.name,
                "resolved_by": r.stages,
                "candidates": candidates,
                "excluded": excluded,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{channel, doc};
    use crate::table::TableDoc;

    /// A table shaped like a typical deployment: aggregators, a free tier, a local
    /// server, dated and vendor-prefixed names, non-chat models.
    fn typical_doc() -> TableDoc {
        let mut groq = channel("groq", 1, &["llama-3.1-8b-instant", "qwen/qwen3-32b"]);
        groq.tags = vec!["free".into()];
        let openrouter = channel(
            "openrouter",
            2,
            &[
                "qwen/qwen3-235b-a22b:free",
                "qwen/qwen3-235b-a22b",
                "qwen/qwen3-30b-a3b:free",
                "openai/gpt-4o-mini",
                "openai/gpt-4o",
                "moonshotai/kimi-k2:free",
                "anthropic/claude-3-haiku",
                "qwen/qwen2.5-coder-32b-instruct",
            ],
        );
        let openai = channel("openai", 3, &["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "whisper-1"]);
        let silicon = channel(
            "siliconflow",
            3,
            &["Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-8B", "BAAI/bge-m3", "text-embedding-qwen3-embedding-0.6b"],
        );
        let anthropic = channel("anthropic", 4, &["claude-3-haiku-20240307"]);
        let mut local = channel("lmstudio", 5, &["qwen3-30b-a3b"]);
        local.tags = vec!["local".into()];
        let mut doubao = channel("doubao", 6, &["ep-20250203083646-2szv9"]);
        doubao.aliases.insert("doubao-1.5-pro-256k".into(), "ep-20250203083646-2szv9".into());
        // An EP endpoint /models does not list: known through its alias only.
        doubao.aliases.insert("doubao-1.5-lite-32k".into(), "ep-20250203083621-dsvgq".into());
        let mut d = doc(vec![groq, openrouter, openai, silicon, anthropic, local, doubao]);
        d.routing.max_retry_attempts = 10;
        d
    }

    fn table() -> Table {
        Table::compile(typical_doc(), None).unwrap()
    }

    fn found(t: &Table, q: &str) -> Vec<String> {
        resolve(t, q, Mode::explain())
            .unwrap_or_else(|e| panic!("{q}: {e:?}"))
            .candidates
            .iter()
            .map(|c| format!("{}/{}", t.channel(c.channel).unwrap().id, c.upstream_model))
            .collect()
    }

    fn error(t: &Table, q: &str) -> RouterError {
        resolve(t, q, Mode::explain()).unwrap_err()
    }

    #[test]
    fn free_qwen3_not_local() {
        let t = table();
        assert_eq!(
            found(&t, "tag:free,qwen3,!local"),
            ["groq/qwen/qwen3-32b", "openrouter/qwen/qwen3-235b-a22b:free", "openrouter/qwen/qwen3-30b-a3b:free"]
        );
        // Case and whitespace do not matter; `tags:` is the same.
        assert_eq!(found(&t, "TAGS: Free , QWEN3, ! local"), found(&t, "tag:free,qwen3,!local"));
        // Without the negation the local model joins only if it is tagged free: it is not.
        assert_eq!(found(&t, "tag:qwen3,local"), ["lmstudio/qwen3-30b-a3b"]);
    }

    #[test]
    fn core_name_reaches_every_variant_on_every_channel() {
        let t = table();
        assert_eq!(
            found(&t, "qwen3-235b-a22b"),
            [
                "openrouter/qwen/qwen3-235b-a22b:free",
                "openrouter/qwen/qwen3-235b-a22b",
                "siliconflow/Qwen/Qwen3-235B-A22B"
            ]
        );
        // Case-insensitive.
        assert_eq!(found(&t, "Qwen3-235B-A22B"), found(&t, "qwen3-235b-a22b"));
        // A specific variant stays specific.
        assert_eq!(found(&t, "qwen/qwen3-235b-a22b:free"), ["openrouter/qwen/qwen3-235b-a22b:free"]);
    }

    #[test]
    fn dates_and_prefixes() {
        let t = table();
        assert_eq!(
            found(&t, "claude-3-haiku"),
            ["openrouter/anthropic/claude-3-haiku", "anthropic/claude-3-haiku-20240307"]
        );
        assert_eq!(found(&t, "claude-3-haiku-20240307"), ["anthropic/claude-3-haiku-20240307"]);
        let r = resolve(&t, "claude-3-haiku", Mode::explain()).unwrap();
        assert_eq!(r.stages, [Stage::CoreName]);
    }

    #[test]
    fn gpt_4o_never_reaches_gpt_4o_mini() {
        let t = table();
        // Exact names first, then the other variants of the core name.
        assert_eq!(found(&t, "gpt-4o"), ["openai/gpt-4o", "openrouter/openai/gpt-4o"]);
        assert!(found(&t, "gpt-4o-mini").iter().all(|c| c.ends_with("gpt-4o-mini")));
    }

    #[test]
    fn alias_and_exact() {
        let t = table();
        assert_eq!(found(&t, "doubao-1.5-pro-256k"), ["doubao/ep-20250203083646-2szv9"]);
        assert_eq!(found(&t, "ep-20250203083646-2szv9"), ["doubao/ep-20250203083646-2szv9"]);
    }

    #[test]
    fn typical_examples() {
        let t = table();
        // "all paid GPT models"
        assert_eq!(
            found(&t, "tag:gpt,!free"),
            ["openrouter/openai/gpt-4o-mini", "openrouter/openai/gpt-4o", "openai/gpt-4o", "openai/gpt-4o-mini"]
        );
        // A known bug in an earlier router: tag:free,kimi must return the kimi model, in either order.
        assert_eq!(found(&t, "tag:free,kimi"), ["openrouter/moonshotai/kimi-k2:free"]);
        assert_eq!(found(&t, "tag:kimi,free"), found(&t, "tag:free,kimi"));
        // Several negatives; the embedding model never appears in chat routing.
        assert_eq!(found(&t, "tag:free,qwen3,!local,!embedding"), found(&t, "tag:free,qwen3,!local"));
        assert!(!found(&t, "tag:qwen3").iter().any(|c| c.contains("embedding")));
        // The standard alias name describes the EP model: its tags and core name reach it.
        assert_eq!(found(&t, "doubao-1.5-pro"), ["doubao/ep-20250203083646-2szv9"]);
        assert_eq!(found(&t, "tag:doubao,lite"), ["doubao/ep-20250203083621-dsvgq"]);
        assert_eq!(found(&t, "doubao-1.5-lite-32k"), ["doubao/ep-20250203083621-dsvgq"]);
        assert_eq!(found(&t, "tag:ep"), ["doubao/ep-20250203083646-2szv9", "doubao/ep-20250203083621-dsvgq"]);
    }

    #[test]
    fn bare_name_falls_back_to_tags() {
        let t = table();
        assert_eq!(found(&t, "kimi-free"), ["openrouter/moonshotai/kimi-k2:free"]);
        let r = resolve(&t, "kimi-free", Mode::explain()).unwrap();
        assert_eq!(r.stages, [Stage::NameAsTags]);
        let e = error(&t, "kimi-paid");
        assert_eq!(e.status, 404);
        assert!(e.message.contains("kimi-paid") && e.message.contains("\"paid\""), "{}", e.message);
    }

    #[test]
    fn unknown_tags_and_empty_results_say_why() {
        let t = table();
        let e = error(&t, "tag:free,nosuchtag");
        assert_eq!(e.status, 404);
        assert!(e.message.contains("\"nosuchtag\" is unknown"), "{}", e.message);
        let e = error(&t, "tag:free,!nosuchtag");
        assert!(e.message.contains("\"nosuchtag\" is unknown"), "{}", e.message);
        let e = error(&t, "tag:kimi,claude");
        assert!(e.message.contains("no model has all of the tags kimi, claude"), "{}", e.message);
        let e = error(&t, "tag:kimi,!free");
        assert!(e.message.contains("excluded tag (!free)"), "{}", e.message);
        let e = error(&t, "tag:embedding");
        assert!(e.message.contains("not chat models"), "{}", e.message);
        assert_eq!(error(&t, "tag:!free").status, 400);
        assert!(error(&t, "auto:nope").message.contains("auto:free"));
    }

    #[test]
    fn non_chat_models_stay_out_of_chat_routing() {
        let t = table();
        let all = found(&t, "auto:balanced");
        assert!(
            all.iter().all(|c| !c.contains("embedding") && !c.contains("whisper") && !c.contains("bge")),
            "{all:?}"
        );
        let r = resolve(&t, "tag:embedding", Mode::explain());
        assert!(r.is_err());
    }

    #[test]
    fn builtin_groups_follow_the_table() {
        let t = table();
        let free = found(&t, "auto:free");
        assert!(free.contains(&"groq/llama-3.1-8b-instant".to_string()));
        assert!(free.contains(&"openrouter/moonshotai/kimi-k2:free".to_string()));
        assert!(free.contains(&"lmstudio/qwen3-30b-a3b".to_string()), "local is free");
        assert!(!free.iter().any(|c| c == "openai/gpt-4o"));
        assert!(found(&t, "auto:vision").contains(&"openai/gpt-4o".to_string()));
        assert!(found(&t, "auto:code").contains(&"openrouter/qwen/qwen2.5-coder-32b-instruct".to_string()));
        assert!(found(&t, "auto:chinese").iter().any(|c| c.contains("qwen")));
        assert!(found(&t, "auto:smart").contains(&"siliconflow/Qwen/Qwen3-235B-A22B".to_string()));
        assert!(found(&t, "auto:fast").contains(&"groq/llama-3.1-8b-instant".to_string()));
        // A new channel serving a matching model joins with no edit.
        let mut d = typical_doc();
        let mut extra = channel("newfree", 9, &["mistral-7b-instruct:free"]);
        extra.tags = vec![];
        d.channels.push(extra);
        let t2 = Table::compile(d, None).unwrap();
        assert!(found(&t2, "auto:free").contains(&"newfree/mistral-7b-instruct:free".to_string()));
    }

    #[test]
    fn user_groups_with_query_filters_and_members() {
        let mut d = typical_doc();
        d.groups.push(crate::groups::GroupDoc {
            name: "my-qwen".into(),
            query: "tag:qwen3,!local".into(),
            filters: crate::groups::GroupFilters { min_parameter_count: Some(30.0), ..Default::default() },
            members: vec![crate::groups::GroupMember {
                channel: "groq".into(),
                model: "llama-3.1-8b-instant".into(),
                priority: 1,
                weight: 1,
            }],
            strategy: crate::score::builtin("speed_optimized"),
            ..Default::default()
        });
        let t = Table::compile(d, None).unwrap();
        assert_eq!(explain_json(&t, "my-qwen")["strategy"], "speed_optimized");
        assert_eq!(explain_json(&t, "auto:smart")["strategy"], "quality_optimized");
        assert_eq!(explain_json(&t, "auto:free")["strategy"], "cost_first");
        let g = found(&t, "my-qwen");
        assert_eq!(g[0], "groq/llama-3.1-8b-instant");
        assert!(g.contains(&"siliconflow/Qwen/Qwen3-235B-A22B".to_string()));
        assert!(!g.iter().any(|c| c.contains("Qwen3-8B") || c.contains("lmstudio")), "{g:?}");
    }

    #[test]
    fn routing_mode_stops_at_the_limit() {
        let t = table();
        let r = resolve(&t, "auto:balanced", Mode::route(2)).unwrap();
        assert_eq!(r.candidates.len(), 2);
        assert!(r.excluded.is_empty());
    }

    #[test]
    fn explain_lists_candidates_facts_and_exclusions() {
        let t = table();
        let v = explain_json(&t, "tag:qwen3,!local");
        assert_eq!(v["query"]["include"], serde_json::json!(["qwen3"]));
        // cost_first: both free candidates cost nothing; the larger model wins.
        assert_eq!(v["strategy"], "cost_first");
        assert_eq!(v["candidates"][0]["model"], "qwen/qwen3-235b-a22b:free");
        assert!(v["candidates"][0]["tags"].as_array().unwrap().iter().any(|x| x == "free"));
        assert_eq!(v["candidates"][0]["score_parts"]["cost"], 1.0);
        assert!(v["candidates"][0]["score"].as_f64().unwrap() > v["candidates"][1]["score"].as_f64().unwrap());
        let ex = v["excluded"].as_array().unwrap();
        assert!(ex.iter().any(|x| x["channel"] == "lmstudio" && x["reason"].as_str().unwrap().contains("local")));
        let v = explain_json(&t, "tag:nope");
        assert_eq!(v["error"]["status"], 404);
    }

    use crate::testrng::Rng;

    const WORDS: &[&str] = &["qwen3", "llama", "gpt", "free", "mini", "8b", "32b", "instruct", "chat", "pro", "turbo"];

    fn random_table(rng: &mut Rng) -> Table {
        let channels = (0..6)
            .map(|i| {
                let models: Vec<String> =
                    (0..8).map(|_| format!("{}-{}-{}", rng.pick(WORDS), rng.pick(WORDS), rng.pick(WORDS))).collect();
                let refs: Vec<&str> = models.iter().map(String::as_str).collect();
                let mut c = channel(&format!("c{i}"), (rng.next() % 3) as i32, &refs);
                if rng.next().is_multiple_of(2) {
                    c.tags = vec![rng.pick(&["free", "local", "cloud"]).to_string()];
                }
                c
            })
            .collect();
        Table::compile(doc(channels), None).unwrap()
    }

    fn set(t: &Table, q: &str) -> Option<std::collections::BTreeSet<(u32, String)>> {
        resolve(t, q, Mode::explain())
            .ok()
            .map(|r| r.candidates.into_iter().map(|c| (c.channel, c.upstream_model)).collect())
    }

    #[test]
    fn property_positive_query_is_within_each_single_tag_result() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let t = random_table(&mut rng);
            let (a, b) = (rng.pick(WORDS), rng.pick(WORDS));
            let Some(both) = set(&t, &format!("tag:{a},{b}")) else { continue };
            for single in [a, b] {
                let one = set(&t, &format!("tag:{single}")).unwrap_or_default();
                assert!(both.is_subset(&one), "tag:{a},{b} not within tag:{single}");
            }
        }
    }

    #[test]
    fn property_negation_never_adds_candidates() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200 {
            let t = random_table(&mut rng);
            let (a, n) = (rng.pick(WORDS), rng.pick(WORDS));
            if a == n {
                continue;
            }
            let base = set(&t, &format!("tag:{a}")).unwrap_or_default();
            if let Some(neg) = set(&t, &format!("tag:{a},!{n}")) {
                assert!(neg.is_subset(&base));
                assert!(neg.iter().all(|(ch, m)| !t
                    .entries_for_model(m)
                    .iter()
                    .filter_map(|&x| t.entry(x))
                    .any(|e| e.channel == *ch && e.tags.contains(&t.tag_id(n).unwrap()))));
            }
        }
    }

    #[test]
    fn property_routing_order_is_a_prefix_of_explain_order() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..100 {
            let t = random_table(&mut rng);
            let q = format!("tag:{}", rng.pick(WORDS));
            let (Ok(full), Ok(cut)) = (resolve(&t, &q, Mode::explain()), resolve(&t, &q, Mode::route(3))) else {
                continue;
            };
            assert_eq!(&full.candidates[..cut.candidates.len()], &cut.candidates[..]);
        }
    }
}
