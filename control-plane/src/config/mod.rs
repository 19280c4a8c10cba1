//! The one YAML file a user writes. Parsing is strict: an unknown key or a bad
//! value is an error naming the file, the key path and why, never a silent default.

mod providers;
mod types;
mod validate;

use std::fmt;
use std::path::Path;

pub use providers::parse_base_url;
pub use types::*;

/// A config file that failed to load: the file, the key path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read, parse, substitute environment variables, fill provider defaults, validate.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        path: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, &|name| std::env::var(name).ok())
}

pub fn parse(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let err = |path: String, message: String| ConfigError { file: file.to_string(), path, message };
    let de = yaml_serde::Deserializer::from_str(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // the YAML parser prefixes its own (shorter) path; ours is the full one.
        let inner = match inner.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
            _ => inner,
        };
        err(path, inner)
    })?;

    // Environment substitution, only in values that may hold secrets or addresses.
    let subst = |value: &mut String, at: String| -> Result<(), ConfigError> {
        *value = substitute_env(value, env).map_err(|m| err(at, m))?;
        Ok(())
    };
    subst(&mut config.control_plane.table_token, "control_plane.table_token".into())?;
    subst(&mut config.control_plane.admin_token, "control_plane.admin_token".into())?;
    for (i, t) in config.control_plane.admin_tokens.iter_mut().enumerate() {
        subst(&mut t.token, format!("control_plane.admin_tokens[{i}].token"))?;
        subst(&mut t.sha256, format!("control_plane.admin_tokens[{i}].sha256"))?;
    }
    subst(&mut config.auth.api_token, "auth.api_token".into())?;
    subst(&mut config.storage.url, "storage.url".into())?;
    for (i, t) in config.auth.api_tokens.iter_mut().enumerate() {
        match t {
            ApiToken::Plain(t) => subst(t, format!("auth.api_tokens[{i}]"))?,
            ApiToken::Rules(r) => {
                subst(&mut r.token, format!("auth.api_tokens[{i}].token"))?;
                subst(&mut r.sha256, format!("auth.api_tokens[{i}].sha256"))?;
            }
        }
    }
    for (i, c) in config.channels.iter_mut().enumerate() {
        if !c.enabled {
            continue;
        }
        subst(&mut c.api_key, format!("channels[{i}].api_key"))?;
        for (k, key) in c.api_keys.iter_mut().enumerate() {
            subst(&mut key.key, format!("channels[{i}].api_keys[{k}]"))?;
        }
        subst(&mut c.base_url, format!("channels[{i}].base_url"))?;
    }
    validate::validate(&mut config).map_err(|(path, message)| err(path, message))?;
    Ok(config)
}

/// `${NAME}` and `${NAME:-default}`; a missing variable without a default is an error.
pub fn substitute_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed ${ in value".to_string())?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("\"${{{expr}}}\" is not a valid environment variable reference"));
        }
        match (env(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "GROQ_KEY" => Some("gsk-secret".into()),
            _ => None,
        }
    }

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, "router.yaml", &env)
    }

    #[test]
    fn minimal_config_gets_defaults_and_templates() {
        let c = load_str(
            "channels:\n  - id: groq\n    provider: groq\n    api_key: ${GROQ_KEY}\n  - id: local\n    provider: ollama\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7601");
        assert_eq!(c.channels[0].base_url, "https://api.groq.com/openai/v1");
        assert_eq!(c.channels[0].api_key, "gsk-secret");
        assert!(c.channels[1].tags.contains(&"local".to_string()));
        assert_eq!(c.routing.max_retry_attempts, 3);
    }

    #[test]
    fn errors_name_file_path_and_reason() {
        let e = load_str("channels:\n  - id: a\n    base_url: http://x\n    api_kye: k\n").unwrap_err();
        assert_eq!(e.path, "channels[0].api_kye");
        assert!(e.to_string().starts_with("router.yaml: channels[0].api_kye: unknown field `api_kye`"), "{e}");

        let e = load_str("routing:\n  max_retry_attempts: lots\n").unwrap_err();
        assert_eq!(e.path, "routing.max_retry_attempts");

        let e = load_str("channels:\n  - id: a\n    provider: groq\n    api_key: ${NOPE}\n").unwrap_err();
        assert_eq!(e.path, "channels[0].api_key");
        assert!(e.message.contains("NOPE"));

        let e = load_str("channels:\n  - id: a\n    base_url: ftp://x\n").unwrap_err();
        assert_eq!(e.path, "channels[0].base_url");

        let e =
            load_str("channels:\n  - id: a\n    base_url: http://x\n  - id: a\n    base_url: http://y\n").unwrap_err();
        assert!(e.message.contains("duplicate"));

        let e = load_str("channels:\n  - id: 'a b'\n    base_url: http://x\n").unwrap_err();
        assert_eq!(e.path, "channels[0].id");

        let e = load_str("routing:\n  default_strategy: fastest\n").unwrap_err();
        assert_eq!(e.path, "routing.default_strategy");

        let e = load_str("channels: [\n").unwrap_err();
        assert!(!e.message.is_empty());
    }

    #[test]
    fn embedding_models_cannot_be_let_into_chat_routing() {
        let e = load_str("routing:\n  model_filters:\n    exclude_embedding_models: false\n").unwrap_err();
        assert_eq!(e.path, "routing.model_filters.exclude_embedding_models");
        assert!(load_str("routing:\n  model_filters:\n    exclude_embedding_models: true\n").is_ok());
    }

    #[test]
    fn disabled_channels_may_lack_env() {
        let c =
            load_str("channels:\n  - id: a\n    provider: groq\n    enabled: false\n    api_key: ${NOPE}\n").unwrap();
        assert!(!c.channels[0].enabled);
    }

    #[test]
    fn env_substitution_forms() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(substitute_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(substitute_env("${B:-dflt}", &env).unwrap(), "dflt");
        assert!(substitute_env("${B}", &env).is_err());
        assert!(substitute_env("${A", &env).is_err());
        assert!(substitute_env("${A-B}", &env).is_err());
    }

    #[test]
    fn base_urls_split_for_envoy() {
        let u = parse_base_url("https://api.groq.com/openai/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.authority.as_str(), u.path_prefix.as_str()),
            (true, "api.groq.com", 443, "api.groq.com", "/openai/v1")
        );
        let u = parse_base_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.authority.as_str(), u.path_prefix.as_str()), ("127.0.0.1:8080", ""));
        let u = parse_base_url("http://[::1]:9/v1").unwrap();
        assert_eq!((u.host.as_str(), u.authority.as_str()), ("::1", "[::1]:9"));
        for bad in ["api.x.com/v1", "http://", "http://h:99999", "http://h/v1?x=1", "http://user@h"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_keys_get_ids_and_stay_secret() {
        let c = load_str(
            "channels:\n  - id: groq\n    provider: groq\n    api_key: ${GROQ_KEY}\n    key_rotation: fill_first\n    api_keys:\n      - sk-two\n      - {id: third, key: sk-three}\n",
        )
        .unwrap();
        let ch = &c.channels[0];
        let ids: Vec<String> = ch.keys().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids[0], crate::config::types::key_id("gsk-secret"));
        assert!(ids[0].starts_with("key-") && ids[0].len() == 12);
        assert_eq!(ids[2], "third");
        assert_eq!(ch.primary_key(), "gsk-secret");
        assert_eq!(ch.key_rotation, router_core::table::KeyRotation::FillFirst);
        assert!(!format!("{c:?}").contains("sk-t"));
        // One key is a channel as before; the same key twice is refused.
        let one = load_str("channels:\n  - id: a\n    provider: groq\n    api_keys: [sk-1]\n").unwrap();
        assert!(one.channels[0].keys().is_empty());
        assert_eq!(one.channels[0].primary_key(), "sk-1");
        let e = load_str("channels:\n  - id: a\n    provider: groq\n    api_key: sk-1\n    api_keys: [sk-1]\n")
            .unwrap_err();
        assert!(e.path.ends_with("api_keys") && e.message.contains("twice"), "{e:?}");
        let e =
            load_str("channels:\n  - id: a\n    provider: groq\n    api_keys: [{id: 'bad id', key: k}]\n").unwrap_err();
        assert!(e.path.ends_with("api_keys[0].id"), "{e:?}");
    }

    #[test]
    fn token_limits_need_usage_accounting() {
        let e = load_str(
            "usage: {enabled: false}\nchannels:\n  - id: a\n    provider: groq\n    limits: {tokens_per_day: 100}\n",
        )
        .unwrap_err();
        assert!(e.path == "channels[0].limits" && e.message.contains("usage.enabled"), "{e:?}");
        assert!(load_str("channels:\n  - id: a\n    provider: groq\n    limits: {tokens_per_day: 100}\n").is_ok());
    }

    #[test]
    fn debug_hides_keys() {
        let c = load_str("channels:\n  - id: groq\n    provider: groq\n    api_key: ${GROQ_KEY}\n").unwrap();
        assert!(!format!("{c:?}").contains("gsk-secret"));
    }

    #[test]
    fn older_model_groups_and_strategies_parse() {
        let c = load_str(
            r#"
routing:
  default_strategy: my_mix
  sorting_strategies:
    my_mix:
      - field: cost_score
        weight: 0.4
      - field: speed_score
        order: desc
        weight: 0.6
model_groups:
  auto:free:
    display_name: free models
    routing_strategy:
      - field: effective_cost
        order: asc
        weight: 1.0
    filters:
      max_cost_per_1k: 0.0
      min_context_length: 4000
    channels:
      - provider: groq
        model: llama-3.1-8b-instant
        priority: 1
        weight: 1.5
        daily_limit: 1000
"#,
        )
        .unwrap();
        assert_eq!(c.model_groups["auto:free"].channels[0].daily_limit, Some(1000));
    }
}
