//! Secrets the control plane generates when the config does not set them.

use std::io::Read;
use std::path::Path;

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `dir/name`, created (mode 0600) on first use with `prefix` + 32 hex.
pub fn load_or_create(dir: &Path, name: &str, prefix: &str) -> Result<(String, bool), String> {
    let path = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim().to_string();
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let token = format!("{prefix}{}", random_hex(16)?);
    write_private(&path, &token).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
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
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    fn comparison() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
