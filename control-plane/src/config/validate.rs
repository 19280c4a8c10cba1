//! Checks that a parsed config makes sense, and fills in what a channel's
//! provider template implies.

use std::collections::BTreeSet;

use router_core::table::valid_channel_id;

use super::providers::{parse_base_url, provider_template, PROVIDERS};
use super::types::{ApiToken, Config, SortField};

/// Tokens are counted from the answers' usage, which accounting reads.
const NEEDS_USAGE: &str = "token limits are counted from the usage the providers report: usage.enabled must be true";

pub(super) fn validate(c: &mut Config) -> Result<(), (String, String)> {
    let e = |p: &str, m: String| Err((p.to_string(), m));
    for (key, addr) in [
        ("server.listen", &c.server.listen),
        ("server.admin", &c.server.admin),
        ("control_plane.listen", &c.control_plane.listen),
    ] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return e(key, format!("\"{addr}\" is not an address like 127.0.0.1:7601"));
        }
    }
    if c.server.max_body_bytes < 1024 {
        return e("server.max_body_bytes", "must be at least 1024".into());
    }
    if !(1..=64).contains(&c.server.concurrency) {
        return e("server.concurrency", "must be between 1 and 64".into());
    }
    if !(c.server.connect_timeout > 0.0 && c.server.connect_timeout <= 300.0) {
        return e("server.connect_timeout", "must be between 0 and 300 seconds".into());
    }
    let mut budget_ids = std::collections::HashSet::new();
    for (i, b) in c.budgets.iter().enumerate() {
        let at = format!("budgets[{i}]");
        crate::budgets::check(b, c).map_err(|m| (at.clone(), m))?;
        if !budget_ids.insert(b.id.clone()) {
            return e(&format!("{at}.id"), format!("\"{}\" appears twice", b.id));
        }
    }
    if !c.alerts.webhook_url.is_empty() && !c.alerts.webhook_url.starts_with("http") {
        return e("alerts.webhook_url", "must be an http:// or https:// URL".into());
    }
    if c.control_plane.reload_poll_ms < 50 || c.control_plane.table_poll_ms < 50 {
        return e("control_plane", "reload_poll_ms and table_poll_ms must be at least 50".into());
    }
    if c.control_plane.discovery_timeout == 0 || c.control_plane.discovery_interval == 0 {
        return e("control_plane", "discovery_timeout and discovery_interval must be positive".into());
    }
    let (fb, idle) = (c.routing.first_byte_timeout, c.routing.idle_timeout);
    if !(fb > 0.0 && fb <= 3600.0 && idle > 0.0 && idle <= 3600.0) {
        return e("routing", "first_byte_timeout and idle_timeout must be between 0 and 3600 seconds".into());
    }
    if idle < fb {
        return e(
            "routing.idle_timeout",
            format!("must be at least first_byte_timeout ({fb} s): a non-streaming answer is silent until it is done"),
        );
    }
    let cb = &c.routing.circuit_breaker;
    if !(cb.failure_ratio > 0.0 && cb.failure_ratio <= 1.0) || cb.min_failures == 0 || cb.window == 0 {
        return e(
            "routing.circuit_breaker",
            "window and min_failures must be positive, failure_ratio in (0, 1]".into(),
        );
    }
    if c.control_plane.key_validation_interval == 0 || c.control_plane.health_check_interval == 0 {
        return e("control_plane", "key_validation_interval and health_check_interval must be positive".into());
    }
    if c.routing.max_retry_attempts > 20 {
        return e("routing.max_retry_attempts", "must be at most 20".into());
    }
    for (name, fields) in &c.routing.sorting_strategies {
        for (i, f) in fields.iter().enumerate() {
            check_sort_field(f).map_err(|m| (format!("routing.sorting_strategies.{name}[{i}]"), m))?;
        }
    }
    let embedding_filters = std::iter::once(("routing.model_filters".to_string(), &c.routing.model_filters))
        .chain(c.model_groups.iter().map(|(n, g)| (format!("model_groups.{n}.filters"), &g.filters)));
    for (at, f) in embedding_filters {
        if f.exclude_embedding_models == Some(false) {
            return e(
                &format!("{at}.exclude_embedding_models"),
                "non-chat models (embedding, rerank, speech, image) are never routed as chat; remove this key or set it to true".into(),
            );
        }
    }
    for cap in &c.routing.model_filters.capabilities {
        if cap != "tools" && cap != "vision" {
            return e("routing.model_filters.capabilities", format!("unknown capability \"{cap}\" (tools, vision)"));
        }
    }
    for (m, q) in &c.routing.model_quality {
        if !(0.0..=1.0).contains(q) {
            return e(&format!("routing.model_quality.{m}"), "must be between 0 and 1".into());
        }
    }
    let strategy = &c.routing.default_strategy;
    if !router_core::score::BUILTIN.contains(&strategy.as_str()) && !c.routing.sorting_strategies.contains_key(strategy)
    {
        return e(
            "routing.default_strategy",
            format!(
                "unknown strategy \"{strategy}\"; use one of {} or a name under routing.sorting_strategies",
                router_core::score::BUILTIN.join(", ")
            ),
        );
    }
    let printable = |t: &str| t.bytes().all(|b| (0x21..0x7f).contains(&b));
    if !printable(&c.auth.api_token) && !c.auth.api_token.is_empty() {
        return e("auth.api_token", "tokens must be printable ASCII without spaces".into());
    }
    let sw = &c.routing.switch;
    match &sw.default {
        Some(d) if !c.channels.iter().any(|x| x.id == d.channel && x.enabled) => {
            return e("routing.switch.default.channel", format!("no enabled channel \"{}\"", d.channel));
        }
        None if !sw.smart => {
            return e("routing.switch.default", "smart routing off needs a default: {channel, model}".into());
        }
        _ => {}
    }
    if !(sw.delay_seconds >= 0.0 && sw.cooldown_seconds >= 0.0) {
        return e("routing.switch", "delay_seconds and cooldown_seconds are 0 or more".into());
    }
    let mut admin_ids = std::collections::HashSet::from(["admin"]);
    for (i, t) in c.control_plane.admin_tokens.iter().enumerate() {
        let at = format!("control_plane.admin_tokens[{i}]");
        if t.id.is_empty() || !t.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return e(&format!("{at}.id"), format!("\"{}\": an id is A-Z a-z 0-9 - _ .", t.id));
        }
        if !admin_ids.insert(t.id.as_str()) {
            return e(&format!("{at}.id"), format!("\"{}\" is taken (`admin` is control_plane.admin_token's)", t.id));
        }
        let hex = t.sha256.trim();
        match (t.token.is_empty(), hex.is_empty()) {
            (true, true) | (false, false) => {
                return e(&at, "give the token (`token`) or its SHA-256 (`sha256`), one of them".into());
            }
            (false, true) if t.token.len() < 16 || !printable(&t.token) => {
                return e(&format!("{at}.token"), "an admin token is at least 16 printable ASCII characters".into());
            }
            (true, false) if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return e(&format!("{at}.sha256"), "a SHA-256 is 64 hex digits (sha256sum of the token)".into());
            }
            _ => {}
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (i, t) in c.auth.api_tokens.iter().enumerate() {
        let at = format!("auth.api_tokens[{i}]");
        match t {
            ApiToken::Plain(t) if !printable(t) => {
                return e(&at, "tokens must be printable ASCII without spaces".into());
            }
            ApiToken::Plain(_) => {}
            ApiToken::Rules(r) => {
                if r.id.is_empty() || !r.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                    return e(&format!("{at}.id"), format!("\"{}\": an id is A-Z a-z 0-9 - _ .", r.id));
                }
                if !ids.insert(r.id.as_str()) {
                    return e(&format!("{at}.id"), format!("\"{}\" is the id of another token", r.id));
                }
                match (r.token.is_empty(), r.sha256.is_empty()) {
                    (true, true) | (false, false) => {
                        return e(&at, "give the token (`token`) or its SHA-256 (`sha256`), one of them".into());
                    }
                    (false, true) if !printable(&r.token) => {
                        return e(&format!("{at}.token"), "tokens must be printable ASCII without spaces".into());
                    }
                    (true, false)
                        if r.sha256.trim().len() != 64 || !r.sha256.trim().bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        return e(
                            &format!("{at}.sha256"),
                            "a SHA-256 is 64 hex digits (sha256sum of the token)".into(),
                        );
                    }
                    _ => {}
                }
                for ch in &r.allow.channels {
                    if !c.channels.iter().any(|x| x.id == *ch) {
                        return e(&format!("{at}.allow.channels"), format!("no channel \"{ch}\""));
                    }
                }
                if let Some(l) = &r.limits {
                    if l.requests_per_minute == 0 && l.tokens_per_minute == 0 {
                        return e(&format!("{at}.limits"), "set requests_per_minute, tokens_per_minute or both".into());
                    }
                    if l.tokens_per_minute > 0 && !c.usage.enabled {
                        return e(&format!("{at}.limits.tokens_per_minute"), NEEDS_USAGE.into());
                    }
                    if !(l.window_seconds.is_finite() && l.window_seconds >= 0.1 && l.window_seconds <= 86_400.0) {
                        return e(&format!("{at}.limits.window_seconds"), "must be between 0.1 and 86400".into());
                    }
                }
            }
        }
    }

    let url = &c.storage.url;
    if !(url.is_empty()
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return e("storage.url", "must be sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE".into());
    }
    if jiff::tz::TimeZone::get(&c.statistics.timezone).is_err() {
        return e(
            "statistics.timezone",
            format!("unknown time zone \"{}\" (an IANA name such as UTC or Asia/Shanghai)", c.statistics.timezone),
        );
    }

    let mut ids = BTreeSet::new();
    for (i, ch) in c.channels.iter_mut().enumerate() {
        let at = format!("channels[{i}]");
        if !valid_channel_id(&ch.id) {
            return e(&format!("{at}.id"), format!("\"{}\" must be 1-64 characters of A-Z a-z 0-9 _ -", ch.id));
        }
        if !ids.insert(ch.id.clone()) {
            return e(&format!("{at}.id"), format!("duplicate channel id \"{}\"", ch.id));
        }
        let Some(template) = provider_template(&ch.provider) else {
            let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
            return e(
                &format!("{at}.provider"),
                format!(
                    "unknown provider \"{}\"; known: {} (anthropic translation is not built yet)",
                    ch.provider,
                    known.join(", ")
                ),
            );
        };
        if ch.base_url.is_empty() {
            if template.base_url.is_empty() {
                return e(&format!("{at}.base_url"), "required for provider openai_compatible".into());
            }
            ch.base_url = template.base_url.to_string();
        }
        if ch.enabled {
            parse_base_url(&ch.base_url).map_err(|m| (format!("{at}.base_url"), m))?;
        }
        if ch.api_key.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
            return e(&format!("{at}.api_key"), "must be printable ASCII".into());
        }
        for (k, key) in ch.api_keys.iter().enumerate() {
            if key.key.is_empty() || key.key.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                return e(&format!("{at}.api_keys[{k}]"), "must be a non-empty key of printable ASCII".into());
            }
            if !key.id.is_empty() && !router_core::table::valid_channel_id(&key.id) {
                return e(&format!("{at}.api_keys[{k}].id"), "must be 1-64 characters of A-Z a-z 0-9 _ -".into());
            }
        }
        let ids: Vec<String> = ch.keys().into_iter().map(|(id, _)| id).collect();
        if let Some(dup) = ids.iter().enumerate().find(|(n, id)| ids[..*n].contains(id)).map(|(_, id)| id) {
            return e(&format!("{at}.api_keys"), format!("key id \"{dup}\" appears twice (the same key twice?)"));
        }
        if ch.name.is_empty() {
            ch.name = ch.id.clone();
        }
        if !(ch.weight > 0.0 && ch.weight <= 1000.0) {
            return e(&format!("{at}.weight"), "must be greater than 0 and at most 1000".into());
        }
        if let Some(m) = ch.model_name.take() {
            if !ch.configured_models.contains(&m) {
                ch.configured_models.push(m);
            }
        }
        for (j, m) in ch.configured_models.iter().enumerate() {
            if m.trim().is_empty() || m.len() > 512 {
                return e(&format!("{at}.configured_models[{j}]"), "model names must be 1-512 characters".into());
            }
        }
        for (k, v) in &ch.model_aliases {
            if k.trim().is_empty() || v.trim().is_empty() {
                return e(&format!("{at}.model_aliases"), "alias names and targets must not be empty".into());
            }
        }
        for t in ch.tags.iter_mut() {
            *t = t.trim().to_ascii_lowercase();
        }
        for extra in template.tags {
            if !ch.tags.iter().any(|t| t == extra) {
                ch.tags.push((*extra).to_string());
            }
        }
        if !ch.discover && ch.configured_models.is_empty() && ch.model_aliases.is_empty() && ch.enabled {
            return e(
                &format!("{at}.configured_models"),
                "a channel with discover: false needs configured_models or model_aliases".into(),
            );
        }
        for (j, p) in ch.pricing_policies.iter().enumerate() {
            crate::pricing::check(p).map_err(|m| (format!("{at}.pricing_policies[{j}]"), m))?;
        }
        if let Some(l) = &ch.limits {
            crate::limits::check(l).map_err(|m| (format!("{at}.limits"), m))?;
            if (l.tokens_per_minute > 0 || l.tokens_per_day > 0) && !c.usage.enabled {
                return e(&format!("{at}.limits"), NEEDS_USAGE.into());
            }
        }
        if let Some(p) = &ch.pricing {
            let prices = [p.input, p.output, p.cached_input, p.cache_write, p.multiplier].into_iter().flatten();
            let model_prices = p
                .models
                .values()
                .flat_map(|m| [Some(m.input), Some(m.output), m.cached_input, m.cache_write])
                .flatten();
            if prices.chain(model_prices).any(|x| !(x >= 0.0 && x.is_finite())) {
                return e(&format!("{at}.pricing"), "prices and multipliers must be zero or positive".into());
            }
        }
    }
    for (name, g) in &c.model_groups {
        if !g.query.trim().is_empty() {
            match router_core::query::parse(&g.query) {
                Ok(router_core::query::Query::Tags { .. }) => {}
                Ok(_) => {
                    return e(&format!("model_groups.{name}.query"), "must be a tag query like tag:qwen3,!local".into())
                }
                Err(err) => return e(&format!("model_groups.{name}.query"), err.0),
            }
        }
        for cap in &g.filters.capabilities {
            if cap != "tools" && cap != "vision" {
                return e(
                    &format!("model_groups.{name}.filters.capabilities"),
                    format!("unknown capability \"{cap}\" (tools, vision)"),
                );
            }
        }
        for (i, f) in g.routing_strategy.iter().enumerate() {
            check_sort_field(f).map_err(|m| (format!("model_groups.{name}.routing_strategy[{i}]"), m))?;
        }
        for (i, gc) in g.channels.iter().enumerate() {
            if let Some(id) = &gc.channel {
                if !ids.contains(id) {
                    return e(
                        &format!("model_groups.{name}.channels[{i}].channel"),
                        format!("no channel with id \"{id}\""),
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_sort_field(f: &SortField) -> Result<(), String> {
    if router_core::score::Field::parse(&f.field).is_none() {
        return Err(format!(
            "unknown field \"{}\"; use cost, speed, quality, reliability, parameters, context, quota_remaining, priority, free or local (a _score suffix is fine)",
            f.field
        ));
    }
    if !(f.weight >= 0.0 && f.weight.is_finite()) {
        return Err("weight must be zero or positive".into());
    }
    Ok(())
}
