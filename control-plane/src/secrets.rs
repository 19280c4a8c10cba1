//! The control plane's secrets: the table token (Envoy fetches the table, which
//! holds provider keys, with it), the admin token, and client tokens. Each comes
//! from the config, else is generated once into `data_dir` (mode 0600).

use std::path::{Path, PathBuf};

use router_core::table::{token_hash_hex, TokenDoc};

use crate::config::{AdminRole, ApiToken, Config};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no random numbers from the operating system: {0}")]
    Random(getrandom::Error),
}

pub struct Secrets {
    pub table_token: String,
    /// Every admin API token: `admin_token` (id `admin`) first.
    pub admin_tokens: Vec<AdminToken>,
    /// Client tokens as the table carries them: an id and the SHA-256.
    pub client_tokens: Vec<TokenDoc>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("client_tokens", &self.client_tokens.len()).finish_non_exhaustive()
    }
}

impl Secrets {
    /// The config's secrets, generating those it leaves unset.
    pub fn of(config: &Config) -> Result<Self, SecretsError> {
        let dir = &config.control_plane.data_dir;
        let table_token = match config.control_plane.table_token.as_str() {
            "" => load_or_create(dir, "table.token", "sart-")?.0,
            t => t.to_string(),
        };
        let admin_token = match config.control_plane.admin_token.as_str() {
            "" => load_or_create(dir, "admin.token", "sara-")?.0,
            t => t.to_string(),
        };
        let mut client_tokens = configured_client_tokens(config);
        if config.auth.enabled && client_tokens.is_empty() {
            let (token, created) = load_or_create(dir, "api.token", "sar-")?;
            if created {
                // Printed once, so the first user can find it.
                tracing::info!(
                    "auth is enabled without a token: generated {token} (saved in {})",
                    dir.join("api.token").display()
                );
            }
            client_tokens.push(plain(&token));
        }
        let mut admin_tokens =
            vec![AdminToken { id: "admin".into(), sha256: token_hash_hex(&admin_token), role: AdminRole::Admin }];
        admin_tokens.extend(config.control_plane.admin_tokens.iter().map(|t| AdminToken {
            id: t.id.clone(),
            sha256: hash_of(&t.token, &t.sha256),
            role: t.role,
        }));
        Ok(Self { table_token, admin_tokens, client_tokens })
    }
}

/// A token's SHA-256 in hex: the configured one, else the token's.
fn hash_of(token: &str, sha256: &str) -> String {
    if sha256.is_empty() {
        token_hash_hex(token)
    } else {
        sha256.trim().to_ascii_lowercase()
    }
}

/// An admin API token as the control plane checks it: by its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminToken {
    pub id: String,
    pub sha256: String,
    pub role: AdminRole,
}

/// The admin token `presented` is, if any (compared in constant time).
pub fn admin_of<'a>(tokens: &'a [AdminToken], presented: &str) -> Option<&'a AdminToken> {
    let hash = token_hash_hex(presented);
    // Every token is compared, so the time says nothing about which matched.
    tokens.iter().fold(None, |found, t| if same(&hash, &t.sha256) && found.is_none() { Some(t) } else { found })
}

/// The client tokens the config names, as the table carries them.
pub fn configured_client_tokens(config: &Config) -> Vec<TokenDoc> {
    let mut tokens: Vec<TokenDoc> = config.auth.api_tokens.iter().filter_map(token_doc).collect();
    if !config.auth.api_token.is_empty() {
        tokens.push(plain(&config.auth.api_token));
    }
    tokens
}

/// A token given as a bare string: its id is a fingerprint (the hash's first
/// eight hex digits), so records can tell tokens apart without holding them.
pub fn plain(token: &str) -> TokenDoc {
    let sha256 = token_hash_hex(token);
    TokenDoc { id: format!("token-{}", sha256.get(..8).unwrap_or_default()), sha256, ..Default::default() }
}

fn token_doc(t: &ApiToken) -> Option<TokenDoc> {
    match t {
        ApiToken::Plain(t) if t.is_empty() => None,
        ApiToken::Plain(t) => Some(plain(t)),
        ApiToken::Rules(r) => Some(TokenDoc {
            id: r.id.clone(),
            sha256: hash_of(&r.token, &r.sha256),
            channels: r.allow.channels.clone(),
            tags: r.allow.tags.iter().map(|t| t.trim().to_ascii_lowercase()).collect(),
            models: r.allow.models.clone(),
            limits: r.limits.as_ref().map(|l| router_core::table::TokenLimits {
                requests_per_window: l.requests_per_minute,
                tokens_per_window: l.tokens_per_minute,
                window_ms: (l.window_seconds * 1000.0).round() as u64,
            }),
        }),
    }
}

/// A new client token, as the admin API hands it out (once).
pub fn new_client_token() -> Result<String, SecretsError> {
    Ok(format!("sar-{}", random_hex(24)?))
}

fn random_hex(bytes: usize) -> Result<String, SecretsError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(SecretsError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `dir/name`, created (mode 0600) on first use with `prefix` + 32 hex.
pub fn load_or_create(dir: &Path, name: &str, prefix: &str) -> Result<(String, bool), SecretsError> {
    let path = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim().to_string();
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| SecretsError::CreateDir { path: dir.to_path_buf(), source })?;
    let token = format!("{prefix}{}", random_hex(16)?);
    write_private(&path, &token).map_err(|source| SecretsError::Write { path: path.clone(), source })?;
    Ok((token, true))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timing.
pub fn same(a: &str, b: &str) -> bool {
    router_core::flow::same_secret(a, b)
}

/// A SHA-256 hex digest: stable across builds, so it can be stored, and one-way,
/// so a fingerprint of a key on disk does not give the key away.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("sar-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, created) = load_or_create(&dir, "t", "sar-").unwrap();
        assert!(created && a.starts_with("sar-") && a.len() == 36);
        let (b, created) = load_or_create(&dir, "t", "sar-").unwrap();
        assert!(!created);
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn comparison_and_digest() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
