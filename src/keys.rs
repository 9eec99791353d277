//! Where provider keys come from besides the config itself, so a key takes effect without a
//! restart: the secrets file `xx setup` writes (`<config dir>/secrets.toml`, mode 0600, read
//! on every config load), and the values of `key_env` variables, which `xx` can hand to a
//! running gateway when its own environment has a newer one. Keys are compared by
//! fingerprint (a truncated SHA-256), never shown.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The file's name in the config dir.
pub const SECRETS_FILE: &str = "secrets.toml";

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    /// Provider name → its key.
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

/// The keys in `file`, by provider. A missing file is no keys; one that other users can
/// read is refused, since its keys may already be known.
pub fn load_secrets(file: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let origin = file.display().to_string();
    let meta = match std::fs::symlink_metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: origin,
                source,
            });
        }
    };
    let refuse = |message: String| ConfigError::Invalid {
        origin: origin.clone(),
        field: "secrets file".into(),
        message,
    };
    if !meta.is_file() {
        return Err(refuse(
            "is not a plain file; remove it and run `xx setup`".into(),
        ));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refuse(format!(
            "belongs to uid {}, not to you; remove it and run `xx setup`",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "is open to other users (mode {:o}); `chmod 600` it, and replace its keys if others may have read them",
            meta.mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let parsed: SecretsFile = crate::config::parse_toml(&text, &origin)?;
    Ok(parsed.keys)
}

/// Set (or, with `None`, remove) `provider`'s key in `file`, written whole to a 0600 temp
/// file and renamed over the old one, so a reader never sees half a file.
pub fn store_secret(file: &Path, provider: &str, key: Option<&str>) -> Result<(), String> {
    let mut keys = load_secrets(file).map_err(|e| e.to_string())?;
    match key {
        Some(key) => keys.insert(provider.to_string(), key.to_string()),
        None => keys.remove(provider),
    };
    let text = format!(
        "# Provider keys written by `xx setup`; clutch reads them on every config load.\n# Keep this file private (mode 0600).\n{}",
        toml::to_string(&SecretsFile { keys }).map_err(|e| e.to_string())?
    );
    let dir = file.parent().unwrap_or(Path::new("."));
    crate::paths::ensure_private_dir(dir)?;
    let temp = dir.join(format!(".{SECRETS_FILE}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, file))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Values `xx` handed to the running gateway for `key_env` variables, newer than the ones
/// the gateway started with. In memory only.
static HANDED_OVER: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// The value of the key variable `name`: one handed over by `xx`, else the environment's.
pub fn env_key(name: &str) -> Option<String> {
    let handed = HANDED_OVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    handed
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.is_empty())
}

/// Use `value` for the key variable `name` from now on, in this process.
pub fn hand_over(name: &str, value: &str) {
    HANDED_OVER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), value.to_string());
}

/// A short, stable fingerprint of a key: enough to tell two keys apart, useless for
/// recovering one.
pub fn fingerprint(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("clutch key fingerprint\0{key}").as_bytes(),
    );
    digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` is a usable environment variable name for a key.
pub fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
