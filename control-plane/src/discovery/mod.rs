//! Model discovery: `GET {base_url}/models` with the channel's key.
//!
//! Blocking (ureq), run on tokio's blocking pool. Errors name the channel and the
//! status or transport failure, never the key.

use std::time::Duration;

use router_core::table::ModelDoc;
use serde::Deserialize;

use crate::config::ChannelConfig;

pub mod balance;
pub mod cache;

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    /// OpenRouter and others.
    #[serde(default)]
    context_length: Option<u64>,
    /// Groq.
    #[serde(default)]
    context_window: Option<u64>,
    /// OpenRouter: `["tools", "tool_choice", ...]`.
    #[serde(default)]
    supported_parameters: Vec<String>,
    /// OpenRouter: `{"input_modalities": ["text", "image"], "output_modalities": [...]}`.
    #[serde(default)]
    architecture: Option<Architecture>,
    #[serde(default)]
    pricing: Option<ProviderPricing>,
}

/// OpenRouter: USD per token, as strings (`"0.0000003"`).
#[derive(Deserialize, Default)]
struct ProviderPricing {
    #[serde(default)]
    prompt: serde_json::Value,
    #[serde(default)]
    completion: serde_json::Value,
    #[serde(default)]
    input_cache_read: serde_json::Value,
    #[serde(default)]
    input_cache_write: serde_json::Value,
}

/// A per-token price (string or number) as USD per 1M tokens.
fn per_million(v: &serde_json::Value) -> Option<f64> {
    let per_token = match v {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    (per_token.is_finite() && per_token >= 0.0).then_some(per_token * 1e6)
}

#[derive(Deserialize, Default)]
struct Architecture {
    #[serde(default)]
    input_modalities: Vec<String>,
    #[serde(default)]
    output_modalities: Vec<String>,
}

impl ModelEntry {
    /// Capabilities the provider states; empty when it states none (the name decides).
    fn capabilities(&self) -> Vec<String> {
        let mut caps = Vec::new();
        let Some(arch) = &self.architecture else {
            if self.supported_parameters.iter().any(|p| p == "tools") {
                caps.push("tools".to_string());
            }
            return caps;
        };
        caps.push("chat".to_string());
        if self.supported_parameters.iter().any(|p| p == "tools") {
            caps.push("tools".into());
        }
        if arch.input_modalities.iter().any(|m| m == "image") {
            caps.push("vision".into());
        }
        if !arch.output_modalities.is_empty() && !arch.output_modalities.iter().any(|m| m == "text") {
            caps.push("image".into());
        }
        caps
    }
}

/// A discovery that failed; `key_rejected` when the provider answered 401/403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryError {
    pub message: String,
    pub key_rejected: bool,
    /// No answer, or a 5xx: the channel itself looks down.
    pub unreachable: bool,
}

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for DiscoveryError {
    fn from(message: String) -> Self {
        Self { message, key_rejected: false, unreachable: false }
    }
}

/// The HTTP client for `GET {base_url}/models`. For `https` channels it trusts
/// exactly the CA bundle Envoy trusts (`server.ca_file`) and checks that the
/// certificate names the channel's host, as Envoy does: the two sides agree on
/// which servers may see a key.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// Why the CA bundle could not be read, if it could not (https channels fail).
    ca_problem: Option<String>,
}

impl Client {
    pub fn new(ca_file: &str, timeout: Duration) -> Self {
        let (roots, ca_problem) = match load_ca(ca_file) {
            Ok(certs) => (ureq::tls::RootCerts::new_with_certs(&certs), None),
            Err(e) => (ureq::tls::RootCerts::new_with_certs(&[]), Some(e)),
        };
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Self { agent, ca_problem }
    }

    /// Why https channels cannot be checked, if they cannot.
    pub fn ca_problem(&self) -> Option<&str> {
        self.ca_problem.as_deref()
    }

    /// The account's balance, where the provider tells it (`None`: it does not).
    pub fn balance(&self, channel: &ChannelConfig, now_ms: u64) -> Option<Result<balance::Balance, String>> {
        let url = balance::url(channel)?;
        let mut request = self.agent.get(&url);
        if !channel.primary_key().is_empty() {
            request = request.header("authorization", &format!("Bearer {}", channel.primary_key()));
        }
        let fetched = request.call().map_err(|e| format!("GET {url}: {e}")).and_then(|mut r| {
            let status = r.status().as_u16();
            if status != 200 {
                return Err(format!("GET {url}: status {status}"));
            }
            r.body_mut().with_config().limit(1024 * 1024).read_to_vec().map_err(|e| format!("GET {url}: {e}"))
        });
        Some(
            fetched.and_then(|body| {
                balance::parse(&channel.provider, &body, now_ms).map_err(|e| format!("GET {url}: {e}"))
            }),
        )
    }

    /// `GET {base_url}/models`: the channel's models, and a check of its key.
    pub fn discover(&self, channel: &ChannelConfig) -> Result<Vec<ModelDoc>, DiscoveryError> {
        let url = format!("{}/models", channel.base_url.trim_end_matches('/'));
        if let (Some(problem), true) = (&self.ca_problem, url.starts_with("https://")) {
            return Err(DiscoveryError {
                message: format!("GET {url}: {problem}"),
                key_rejected: false,
                unreachable: true,
            });
        }
        let mut request = self.agent.get(&url);
        if !channel.primary_key().is_empty() {
            request = request.header("authorization", &format!("Bearer {}", channel.primary_key()));
        }
        let mut response = request.call().map_err(|e| DiscoveryError {
            message: format!("GET {url}: {e}"),
            key_rejected: false,
            unreachable: true,
        })?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(DiscoveryError {
                message: format!("GET {url}: status {status}"),
                key_rejected: matches!(status, 401 | 403),
                unreachable: status >= 500,
            });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| DiscoveryError::from(format!("GET {url}: {e}")))?;
        parse_models(&body).map_err(|e| DiscoveryError::from(format!("GET {url}: {e}")))
    }
}

/// Every certificate in a PEM bundle.
fn load_ca(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the CA bundle {path} (server.ca_file): {e}"))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(format!("the CA bundle {path} (server.ca_file) holds no certificate"));
    }
    Ok(certs)
}

pub fn parse_models(body: &[u8]) -> Result<Vec<ModelDoc>, String> {
    let list: ModelList = serde_json::from_slice(body).map_err(|e| format!("not an OpenAI model list: {e}"))?;
    let mut models: Vec<ModelDoc> = list
        .data
        .into_iter()
        .filter(|m| !m.id.trim().is_empty() && m.id.len() <= 512)
        .map(|m| ModelDoc {
            capabilities: m.capabilities(),
            input_price: m.pricing.as_ref().and_then(|p| per_million(&p.prompt)),
            output_price: m.pricing.as_ref().and_then(|p| per_million(&p.completion)),
            cached_input_price: m.pricing.as_ref().and_then(|p| per_million(&p.input_cache_read)),
            cache_write_price: m.pricing.as_ref().and_then(|p| per_million(&p.input_cache_write)),
            id: m.id,
            context_length: m.context_length.or(m.context_window),
        })
        .collect();
    models.sort_by(|a, b| a.id.cmp(&b.id));
    models.dedup_by(|a, b| a.id == b.id);
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_openrouter_and_groq_lists() {
        let m = parse_models(
            br#"{"object":"list","data":[{"id":"b","context_length":32768},{"id":"a","context_window":8192,"extra":1},{"id":"a"},{"id":""}]}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].id.as_str(), m[0].context_length), ("a", Some(8192)));
        assert_eq!(m[1].context_length, Some(32768));
        assert!(parse_models(b"<html>").is_err());
    }
}
