//! Virtual model groups: `auto:free`, `auto:fast`, ... and user groups.
//!
//! A group is a predicate over the table's chat models, evaluated when a table is
//! compiled, so a channel that starts serving a matching model joins the group with
//! no edit. A user group from the YAML (`model_groups`) with a built-in name
//! replaces the built-in one.

use serde::{Deserialize, Serialize};

/// What the table document says about a group (user groups come from the YAML).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupDoc {
    pub name: String,
    pub description: String,
    /// A tag query (`tag:qwen3,!local`) selecting members; empty selects every chat model.
    pub query: String,
    pub filters: GroupFilters,
    /// Admission: when not empty, a model must meet at least one of these.
    pub any_of: AnyOf,
    /// Explicit members, tried before the query's members, lowest priority first.
    pub members: Vec<GroupMember>,
    /// The group's own strategy (`routing_strategy` in the YAML); none: the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<crate::score::Strategy>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupFilters {
    pub min_context_length: Option<u64>,
    /// Billions of parameters.
    pub min_parameter_count: Option<f64>,
    pub max_parameter_count: Option<f64>,
    /// Only models that are free (a `free` tag on the model or its channel, or local).
    pub free_only: bool,
    /// USD per 1K tokens (input and output blended 3:1); a model with no known
    /// price is left out unless it is free.
    pub max_cost_per_1k: Option<f64>,
    /// Capabilities the model must have: `tools`, `vision`.
    pub capabilities: Vec<String>,
}

/// Alternatives that admit a model: any one suffices. Empty admits every model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AnyOf {
    pub tags: Vec<String>,
    pub min_parameter_count: Option<f64>,
    pub max_parameter_count: Option<f64>,
}

impl AnyOf {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.min_parameter_count.is_none() && self.max_parameter_count.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GroupMember {
    pub channel: String,
    pub model: String,
    pub priority: i32,
    pub weight: u32,
}

fn builtin(name: &str, description: &str, filters: GroupFilters, any_of: AnyOf) -> GroupDoc {
    // The strategy a group's name promises; the rest follow the default strategy.
    let strategy = match name {
        "auto:fast" => "speed_optimized",
        "auto:smart" | "auto:premium" => "quality_optimized",
        "auto:balanced" => "balanced",
        "auto:cheap" => "cost_first",
        _ => "",
    };
    GroupDoc {
        name: name.into(),
        description: description.into(),
        query: String::new(),
        filters,
        any_of,
        members: vec![],
        strategy: crate::score::builtin(strategy),
    }
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// The built-in groups. Membership uses tags, parameter counts and capabilities,
/// so it follows whatever the channels serve.
pub fn builtin_groups() -> Vec<GroupDoc> {
    vec![
        builtin(
            "auto:free",
            "free models: a :free variant, a free-tier channel, or a local one",
            GroupFilters { free_only: true, ..Default::default() },
            AnyOf::default(),
        ),
        builtin(
            "auto:fast",
            "small and fast models (10B parameters or fewer, or a fast variant)",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&[
                    "mini", "nano", "flash", "lite", "instant", "turbo", "haiku", "small", "tiny", "air", "fast",
                ]),
                max_parameter_count: Some(10.0),
                ..Default::default()
            },
        ),
        builtin(
            "auto:cheap",
            "free or low-cost models",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&["free", "mini", "nano", "flash", "lite", "instant", "haiku", "small", "local"]),
                ..Default::default()
            },
        ),
        builtin(
            "auto:smart",
            "large, capable models (70B parameters or more, or a flagship family)",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&[
                    "4o", "4.1", "5", "o1", "o3", "o4", "opus", "sonnet", "pro", "r1", "max", "large", "v3", "k2",
                ]),
                min_parameter_count: Some(70.0),
                ..Default::default()
            },
        ),
        builtin(
            "auto:balanced",
            "every chat model, balancing cost, speed and quality",
            GroupFilters::default(),
            AnyOf::default(),
        ),
        builtin(
            "auto:premium",
            "flagship models",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&["opus", "sonnet", "o1", "o3", "4.1", "4o", "5", "pro", "max", "r1"]),
                min_parameter_count: Some(200.0),
                ..Default::default()
            },
        ),
        builtin(
            "auto:tools",
            "models that can call tools (function calling)",
            GroupFilters { capabilities: tags(&["tools"]), ..Default::default() },
            AnyOf::default(),
        ),
        builtin(
            "auto:vision",
            "models that accept images",
            GroupFilters { capabilities: tags(&["vision"]), ..Default::default() },
            AnyOf::default(),
        ),
        builtin(
            "auto:code",
            "models tuned for code",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&["coder", "code", "codestral", "devstral", "codex", "starcoder", "codegemma", "codellama"]),
                ..Default::default()
            },
        ),
        builtin(
            "auto:chinese",
            "models from Chinese labs, strong in Chinese",
            GroupFilters::default(),
            AnyOf {
                tags: tags(&[
                    "qwen",
                    "qwen2",
                    "qwen2.5",
                    "qwen3",
                    "qwq",
                    "glm",
                    "chatglm",
                    "deepseek",
                    "doubao",
                    "kimi",
                    "moonshot",
                    "moonshotai",
                    "yi",
                    "baichuan",
                    "ernie",
                    "hunyuan",
                    "minimax",
                    "abab",
                    "spark",
                    "internlm",
                    "step",
                    "zhipu",
                    "thudm",
                    "sensechat",
                ]),
                ..Default::default()
            },
        ),
    ]
}

/// Tools and vision from the name when the provider did not say.
/// Conservative: a model is assumed to support tools unless its family is known not
/// to, since failing over from a tool-less model is cheap and excluding a capable one
/// is not.
pub fn name_capabilities(tags: &[String]) -> (bool, bool) {
    let has = |t: &str| tags.iter().any(|x| x == t);
    let vision = ["vision", "vl", "vlm", "4o", "4.1", "gemini", "claude", "pixtral", "llava", "qvq", "omni", "4v", "5"]
        .iter()
        .any(|t| has(t))
        || tags.iter().any(|t| t.ends_with("vl") || t.starts_with("llava"));
    let no_tools = ["gemma", "phi", "tinyllama", "o1-mini", "qwq", "r1", "reasoner", "base", "instruct-base"]
        .iter()
        .any(|t| has(t));
    (!no_tools, vision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_cover_the_spec_names() {
        let names: Vec<String> = builtin_groups().into_iter().map(|g| g.name).collect();
        for n in [
            "auto:free",
            "auto:fast",
            "auto:cheap",
            "auto:smart",
            "auto:balanced",
            "auto:premium",
            "auto:tools",
            "auto:vision",
            "auto:code",
            "auto:chinese",
        ] {
            assert!(names.iter().any(|x| x == n), "{n}");
        }
    }

    #[test]
    fn capabilities_from_tags() {
        let t = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(name_capabilities(&t(&["gpt", "4o", "mini"])), (true, true));
        assert_eq!(name_capabilities(&t(&["qwen2.5", "vl", "72b"])), (true, true));
        assert_eq!(name_capabilities(&t(&["deepseek", "r1"])), (false, false));
        assert_eq!(name_capabilities(&t(&["llama", "3.1", "8b"])), (true, false));
    }
}
