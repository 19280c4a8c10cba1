//! Provider templates and base URLs.

/// What a provider name implies when the channel does not say.
pub struct ProviderTemplate {
    pub name: &'static str,
    pub base_url: &'static str,
    pub tags: &'static [&'static str],
}

pub const PROVIDERS: &[ProviderTemplate] = &[
    ProviderTemplate { name: "openai", base_url: "https://api.openai.com/v1", tags: &["cloud"] },
    ProviderTemplate { name: "groq", base_url: "https://api.groq.com/openai/v1", tags: &["cloud"] },
    ProviderTemplate { name: "openrouter", base_url: "https://openrouter.ai/api/v1", tags: &["cloud"] },
    ProviderTemplate { name: "siliconflow", base_url: "https://api.siliconflow.cn/v1", tags: &["cloud"] },
    ProviderTemplate { name: "deepseek", base_url: "https://api.deepseek.com/v1", tags: &["cloud"] },
    ProviderTemplate { name: "zhipu", base_url: "https://open.bigmodel.cn/api/paas/v4", tags: &["cloud"] },
    ProviderTemplate { name: "doubao", base_url: "https://ark.cn-beijing.volces.com/api/v3", tags: &["cloud"] },
    ProviderTemplate { name: "burn_hair", base_url: "https://burn.hair/v1", tags: &["cloud"] },
    ProviderTemplate { name: "ollama", base_url: "http://127.0.0.1:11434/v1", tags: &["local"] },
    ProviderTemplate { name: "lmstudio", base_url: "http://127.0.0.1:1234/v1", tags: &["local"] },
    ProviderTemplate { name: "openai_compatible", base_url: "", tags: &[] },
];

pub fn provider_template(name: &str) -> Option<&'static ProviderTemplate> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// A base URL split into what Envoy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host` or `host:port` when the port is not the scheme's default.
    pub authority: String,
    /// Path without a trailing slash (`/v1`), possibly empty.
    pub path_prefix: String,
}

pub fn parse_base_url(raw: &str) -> Result<Upstream, String> {
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err(format!("\"{raw}\" must start with http:// or https://"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("\"{raw}\" is not a valid URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{raw}\" must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("\"{raw}\" must not carry credentials (put the key in api_key)"));
    }
    let tls = url.scheme() == "https";
    let (host, shown) = match url.host() {
        Some(url::Host::Domain(d)) => (d.to_string(), d.to_string()),
        Some(url::Host::Ipv4(a)) => (a.to_string(), a.to_string()),
        Some(url::Host::Ipv6(a)) => (a.to_string(), format!("[{a}]")),
        None => return Err(format!("\"{raw}\" has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{shown}:{p}"),
        None => shown,
    };
    Ok(Upstream { tls, host, port, authority, path_prefix: url.path().trim_end_matches('/').to_string() })
}
