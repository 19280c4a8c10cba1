//! Config + discovered models -> the table document filters route with.

use std::collections::HashMap;

use router_core::groups::{GroupDoc, GroupFilters, GroupMember};
use router_core::table::{AuthDoc, ChannelDoc, KeyDoc, ModelDoc, RoutingDoc, TableDoc, SCHEMA};

use crate::config::{parse_base_url, ChannelConfig, Config};

/// Envoy cluster for a channel; render-envoy and the table must agree on it.
pub fn cluster_name(channel_id: &str) -> String {
    format!("channel_{channel_id}")
}

/// The models a channel serves, with where the list came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelModels {
    pub models: Vec<ModelDoc>,
    pub source: ModelSource,
    /// Last time the provider accepted the key (ms since the epoch; 0: unknown).
    pub key_ok_ms: u64,
    /// The last check answered 401/403.
    pub key_rejected: bool,
    /// The last check got no answer or a 5xx.
    pub unreachable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    Discovered,
    Configured,
}

impl ModelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Configured => "configured",
        }
    }
}

/// Models from discovery when it succeeded, else the channel's `configured_models`.
pub fn models_for(channel: &ChannelConfig, discovered: Option<&Vec<ModelDoc>>) -> ChannelModels {
    match discovered {
        Some(models) if channel.discover => ChannelModels {
            models: models.clone(),
            source: ModelSource::Discovered,
            key_ok_ms: 0,
            key_rejected: false,
            unreachable: false,
        },
        _ => ChannelModels {
            models: channel
                .configured_models
                .iter()
                .map(|m| ModelDoc { id: m.clone(), ..Default::default() })
                .collect(),
            source: ModelSource::Configured,
            key_ok_ms: 0,
            key_rejected: false,
            unreachable: false,
        },
    }
}

pub fn build(
    config: &Config,
    models: &HashMap<String, ChannelModels>,
    client_tokens: &[router_core::table::TokenDoc],
) -> TableDoc {
    let now = crate::commands::serve::epoch_ms();
    let budgets: Vec<router_core::table::BudgetDoc> =
        config.budgets.iter().map(|b| crate::budgets::doc(b, 0, 0, &crate::budgets::period(b, now))).collect();
    build_with(config, models, client_tokens, &HashMap::new(), &day_starts(config, now), &budgets)
}

/// When each limited channel's day began at `now_ms` (its provider's clock).
pub fn day_starts(config: &Config, now_ms: u64) -> HashMap<String, u64> {
    config
        .channels
        .iter()
        .filter_map(|c| Some((c.id.clone(), crate::limits::day_start_ms(c.limits.as_ref()?, now_ms))))
        .collect()
}

/// [`build`] with the pricing policies in force per channel applied, and each
/// limited channel's day as it began.
pub fn build_with(
    config: &Config,
    models: &HashMap<String, ChannelModels>,
    client_tokens: &[router_core::table::TokenDoc],
    policies: &HashMap<String, crate::pricing::InForce>,
    day_starts: &HashMap<String, u64>,
    budgets: &[router_core::table::BudgetDoc],
) -> TableDoc {
    let channels = config
        .channels
        .iter()
        .filter(|c| c.enabled)
        .filter_map(|c| {
            // Validated at load; a channel whose URL no longer parses is left out.
            let up = parse_base_url(&c.base_url).ok()?;
            let list = models.get(&c.id).cloned().unwrap_or_else(|| models_for(c, None));
            Some(ChannelDoc {
                id: c.id.clone(),
                name: c.name.clone(),
                provider: c.provider.clone(),
                cluster: cluster_name(&c.id),
                authority: up.authority,
                path_prefix: up.path_prefix,
                auth_header: if c.primary_key().is_empty() { String::new() } else { "authorization".into() },
                auth_value: if c.primary_key().is_empty() {
                    String::new()
                } else {
                    format!("Bearer {}", c.primary_key())
                },
                tags: c.tags.clone(),
                priority: c.priority,
                weight: c.weight.round().max(1.0) as u32,
                // A rejected key or a failed health check makes the channel a last
                // resort (with several keys, only the rejected one is).
                healthy: !(list.unreachable || list.key_rejected && c.keys().is_empty()),
                key_ok_ms: list.key_ok_ms,
                models: priced(c, list.models, policies.get(&c.id).map_or(1.0, |p| p.multiplier)),
                aliases: c.model_aliases.clone(),
                pricing_policies: policies.get(&c.id).map(|p| p.names.clone()).unwrap_or_default(),
                limits: c.limits.as_ref().map(|l| {
                    let mut doc = crate::limits::doc(l, 0);
                    doc.day_start_ms = day_starts.get(&c.id).copied().unwrap_or(0);
                    doc
                }),
                // Discovery checks the first key; the others prove themselves on use.
                keys: c
                    .keys()
                    .into_iter()
                    .enumerate()
                    .map(|(n, (id, key))| KeyDoc {
                        id,
                        auth_value: format!("Bearer {key}"),
                        key_ok_ms: if n == 0 { list.key_ok_ms } else { 0 },
                        healthy: n > 0 || !list.key_rejected,
                    })
                    .collect(),
                key_rotation: c.key_rotation,
            })
        })
        .collect();
    let mut doc = TableDoc {
        schema: SCHEMA,
        version: String::new(),
        routing: RoutingDoc {
            max_retry_attempts: config.routing.max_retry_attempts,
            debug_headers: config.routing.debug_headers,
            default_strategy: config.routing.default_strategy.clone(),
            health: health_policy(config),
            strategies: custom_strategies(config),
            quality: config.routing.model_quality.clone(),
            filters: router_core::groups::GroupFilters {
                min_context_length: config.routing.model_filters.min_context_length,
                min_parameter_count: config.routing.model_filters.min_parameter_count,
                max_cost_per_1k: config.routing.model_filters.max_cost_per_1k,
                capabilities: config.routing.model_filters.capabilities.clone(),
                ..Default::default()
            },
            simple_prompt_tokens: config.routing.simple_prompt_tokens,
            fixed_group: switched_off(config).map(|_| SWITCH_GROUP.to_string()),
        },
        auth: AuthDoc { enabled: config.auth.enabled, tokens: client_tokens.to_vec() },
        channels,
        groups: {
            let mut g = groups(config);
            if let Some(d) = switched_off(config) {
                g.push(GroupDoc {
                    name: SWITCH_GROUP.into(),
                    description: "smart routing is off: the routing switch's default".into(),
                    query: String::new(),
                    filters: GroupFilters::default(),
                    any_of: Default::default(),
                    members: vec![GroupMember {
                        channel: d.channel.clone(),
                        model: d.model.clone(),
                        priority: 1,
                        weight: 1,
                    }],
                    ..Default::default()
                });
            }
            g
        },
        usage: router_core::table::UsageDoc {
            enabled: config.usage.enabled,
            reserve_output_tokens: config.usage.reserve_output_tokens,
        },
        budgets: budgets.to_vec(),
    };
    doc.version = content_version(&doc);
    doc
}

/// Prices as the channel charges them: the config's per-model price, else its
/// channel default, else what the provider reported; then the channel multiplier
/// and `policy`, the multiplier of the pricing policies in force.
fn priced(c: &ChannelConfig, models: Vec<ModelDoc>, policy: f64) -> Vec<ModelDoc> {
    let Some(p) = &c.pricing else {
        if policy == 1.0 {
            return models;
        }
        return models
            .into_iter()
            .map(|mut m| {
                for price in
                    [&mut m.input_price, &mut m.output_price, &mut m.cached_input_price, &mut m.cache_write_price]
                {
                    *price = price.map(|x| x * policy);
                }
                m
            })
            .collect();
    };
    let k = p.multiplier.unwrap_or(1.0) * policy;
    models
        .into_iter()
        .map(|mut m| {
            let (i, o, ci, cw) = match p.models.get(&m.id) {
                Some(mp) => (Some(mp.input), Some(mp.output), mp.cached_input, mp.cache_write),
                None => (
                    p.input.or(m.input_price),
                    p.output.or(m.output_price),
                    p.cached_input.or(m.cached_input_price),
                    p.cache_write.or(m.cache_write_price),
                ),
            };
            m.input_price = i.map(|x| x * k);
            m.output_price = o.map(|x| x * k);
            m.cached_input_price = ci.map(|x| x * k);
            m.cache_write_price = cw.map(|x| x * k);
            m
        })
        .collect()
}

/// `routing.sorting_strategies` as scoring layers.
pub fn custom_strategies(config: &Config) -> std::collections::BTreeMap<String, router_core::score::Strategy> {
    config.routing.sorting_strategies.iter().map(|(name, fields)| (name.clone(), strategy_from(name, fields))).collect()
}

pub fn strategy_from(name: &str, fields: &[crate::config::SortField]) -> router_core::score::Strategy {
    use router_core::score::{Field, Layer, Strategy};
    let layers = fields
        .iter()
        .filter_map(|f| {
            let field = Field::parse(&f.field)?;
            // Cost and priority are better low; the rest better high. An explicit
            // order that disagrees ranks the other way round.
            let low_is_good = matches!(field, Field::Cost | Field::Priority);
            let best_first = match f.order {
                None => true,
                Some(crate::config::SortOrder::Asc) => low_is_good,
                Some(crate::config::SortOrder::Desc) => !low_is_good,
            };
            Some(Layer { field, weight: f.weight, best_first })
        })
        .collect();
    Strategy { name: name.to_string(), layers }
}

fn health_policy(config: &Config) -> router_core::health::Policy {
    let cb = &config.routing.circuit_breaker;
    let cooldown = config.routing.error_cooldown_period.max(1) * 1000;
    router_core::health::Policy {
        window_ms: cb.window * 1000,
        min_failures: cb.min_failures,
        failure_ratio: cb.failure_ratio,
        cooldown_ms: cooldown,
        max_cooldown_ms: (cb.max_cooldown * 1000).max(cooldown),
        rate_limit_ms: cb.rate_limit_cooldown * 1000,
        probe_timeout_ms: 30_000,
        key_retry_ms: config.control_plane.key_validation_interval.saturating_mul(2000).max(60_000),
    }
}

/// The group every request goes to while smart routing is switched off.
pub const SWITCH_GROUP: &str = "routing-switch-default";

/// The switch's default, when smart routing is off now.
fn switched_off(config: &Config) -> Option<&crate::config::SwitchDefault> {
    let sw = &config.routing.switch;
    if sw.smart_at(crate::commands::serve::epoch_ms()) {
        return None;
    }
    sw.default.as_ref()
}

/// `model_groups` from the YAML as the table carries them.
fn groups(config: &Config) -> Vec<GroupDoc> {
    config
        .model_groups
        .iter()
        .map(|(name, g)| {
            let mut members = Vec::new();
            for m in &g.channels {
                // A member names a channel, or a provider (every enabled channel of it).
                let channels = config.channels.iter().filter(|c| {
                    c.enabled
                        && (m.channel.as_deref() == Some(c.id.as_str())
                            || (m.channel.is_none() && m.provider.as_deref() == Some(c.provider.as_str())))
                });
                for c in channels {
                    members.push(GroupMember {
                        channel: c.id.clone(),
                        model: m.model.clone(),
                        priority: m.priority.unwrap_or(10),
                        weight: m.weight.map(|w| w.round().max(1.0) as u32).unwrap_or(1),
                    });
                }
            }
            let f = &g.filters;
            GroupDoc {
                name: name.to_ascii_lowercase(),
                description: if g.description.is_empty() { g.display_name.clone() } else { g.description.clone() },
                query: g.query.clone(),
                filters: GroupFilters {
                    min_context_length: f.min_context_length,
                    min_parameter_count: f.min_parameter_count,
                    max_parameter_count: None,
                    free_only: false,
                    max_cost_per_1k: f.max_cost_per_1k,
                    capabilities: f.capabilities.clone(),
                },
                any_of: Default::default(),
                members,
                strategy: (!g.routing_strategy.is_empty()).then(|| strategy_from(name, &g.routing_strategy)),
            }
        })
        .collect()
}

/// Equal content, equal version: an unchanged config does not churn the filters.
pub fn content_version(doc: &TableDoc) -> String {
    let mut d = crate::secrets::digest(&serde_json::to_vec(doc).unwrap_or_default());
    d.truncate(16);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use router_core::Table;

    fn config(text: &str) -> Config {
        parse(text, "t.yaml", &|_| None).unwrap()
    }

    #[test]
    fn builds_a_table_filters_accept() {
        let c = config(
            "channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-a\n    discover: false\n    configured_models: [m1]\n    model_aliases: {std: ep-1}\n  - id: off\n    base_url: http://127.0.0.1:9\n    enabled: false\n",
        );
        let doc = build(&c, &HashMap::new(), &[]);
        assert_eq!(doc.channels.len(), 1);
        let ch = &doc.channels[0];
        assert_eq!(
            (ch.cluster.as_str(), ch.authority.as_str(), ch.path_prefix.as_str()),
            ("channel_a", "127.0.0.1:9", "/v1")
        );
        assert_eq!(ch.auth_value, "Bearer sk-a");
        let t = Table::compile(doc.clone(), None).unwrap();
        assert_eq!(t.entries_for_model("m1").len(), 1);
        assert_eq!(t.candidates_for_alias("std")[0].upstream_model, "ep-1");
        // Same config, same version; a change, a new version.
        assert_eq!(build(&c, &HashMap::new(), &[]).version, doc.version);
        let c2 = config("channels:\n  - id: a\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-b\n    discover: false\n    configured_models: [m1]\n");
        assert_ne!(build(&c2, &HashMap::new(), &[]).version, doc.version);
    }

    #[test]
    fn discovered_models_win_when_discovery_is_on() {
        let c = config("channels:\n  - id: a\n    base_url: http://127.0.0.1:9\n    configured_models: [fallback]\n");
        let found = vec![ModelDoc { id: "live".into(), context_length: Some(8192), ..Default::default() }];
        assert_eq!(models_for(&c.channels[0], Some(&found)).models[0].id, "live");
        let fallback = models_for(&c.channels[0], None);
        assert_eq!((fallback.models[0].id.as_str(), fallback.source), ("fallback", ModelSource::Configured));
    }
}
