//! Saving what `xx setup` chose: provider entries merged into `config.toml` (comments and
//! everything else kept), pasted keys in the secrets file, and a `default` routing profile
//! over the chosen providers. Files it replaces are kept as `.bak`; a result the gateway
//! would refuse is rolled back.

use std::path::{Path, PathBuf};

use crate::agent::Protocol;
use crate::gateway::connect::is_loopback_url;
use crate::paths::Paths;

/// Where a chosen provider's key comes from.
pub enum KeySource {
    None,
    /// A variable in the environment, referenced by `key_env`.
    Env(String),
    /// Pasted (or copied with `--store-keys`): kept in the secrets file.
    Stored(String),
}

/// A provider that passed its test.
pub struct Chosen {
    pub name: String,
    pub base_url: String,
    pub format: Protocol,
    pub key: KeySource,
    /// Models for the big, middle and small tiers.
    pub tiers: [String; 3],
}

/// What was written, for the summary.
pub struct Written {
    pub config: PathBuf,
    pub profile: PathBuf,
    pub secrets: Option<PathBuf>,
    pub backups: Vec<PathBuf>,
}

pub fn save(paths: &Paths, chosen: &[Chosen]) -> Result<Written, String> {
    crate::paths::ensure_private_dir(&paths.config_dir)?;
    let config_file = paths.config_file();
    let profiles_dir = paths.user_profiles_dir();
    let profile_file = profiles_dir.join("default.toml");
    let secrets_file = paths.config_dir.join(crate::keys::SECRETS_FILE);
    let mut backups = Vec::new();

    let old_config = std::fs::read_to_string(&config_file).ok();
    let old_profile = std::fs::read_to_string(&profile_file).ok();
    let new_config = merge_providers(old_config.as_deref().unwrap_or(""), chosen)
        .map_err(|e| format!("{}: {e}", config_file.display()))?;
    let mut secrets = None;
    for provider in chosen {
        if let KeySource::Stored(key) = &provider.key {
            crate::keys::store_secret(&secrets_file, &provider.name, Some(key))?;
            secrets = Some(secrets_file.clone());
        }
    }
    if let Some(old) = &old_config
        && old != &new_config
    {
        backups.push(backup(&config_file, old)?);
    }
    write(&config_file, &new_config)?;
    std::fs::create_dir_all(&profiles_dir)
        .map_err(|e| format!("cannot create {}: {e}", profiles_dir.display()))?;
    let profile = profile_text(chosen);
    if let Some(old) = &old_profile
        && old != &profile
    {
        backups.push(backup(&profile_file, old)?);
    }
    write(&profile_file, &profile)?;

    // What the gateway would refuse is put back as it was.
    if let Err(error) = crate::gateway::Routing::load(paths) {
        match &old_config {
            Some(old) => write(&config_file, old)?,
            None => {
                let _ = std::fs::remove_file(&config_file);
            }
        }
        match &old_profile {
            Some(old) => write(&profile_file, old)?,
            None => {
                let _ = std::fs::remove_file(&profile_file);
            }
        }
        return Err(format!(
            "the config this would write is refused ({error}); nothing was changed"
        ));
    }
    Ok(Written {
        config: config_file,
        profile: profile_file,
        secrets,
        backups,
    })
}

fn write(file: &Path, text: &str) -> Result<(), String> {
    std::fs::write(file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

fn backup(file: &Path, old: &str) -> Result<PathBuf, String> {
    let mut name = file.as_os_str().to_owned();
    name.push(".bak");
    let target = PathBuf::from(name);
    write(&target, old)?;
    Ok(target)
}

/// The config text with a `[providers.<name>]` table per chosen provider: URL and format
/// set, the key source replaced, anything else the user put there kept.
fn merge_providers(old: &str, chosen: &[Chosen]) -> Result<String, String> {
    use toml_edit::{DocumentMut, Item, Table, value};
    let mut doc: DocumentMut = old
        .parse()
        .map_err(|e| format!("cannot be read as TOML, so setup leaves it alone: {e}"))?;
    if !doc.contains_key("providers") {
        let mut providers = Table::new();
        providers.set_implicit(true);
        doc.insert("providers", Item::Table(providers));
    }
    let providers = doc["providers"]
        .as_table_mut()
        .ok_or("`providers` is not a table")?;
    for provider in chosen {
        let entry = providers
            .entry(&provider.name)
            .or_insert(Item::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`providers.{}` is not a table", provider.name))?;
        entry.insert("base_url", value(provider.base_url.as_str()));
        entry.insert("format", value(provider.format.name()));
        entry.remove("api_key");
        entry.remove("api_keys");
        entry.remove("key_env");
        if let KeySource::Env(var) = &provider.key {
            entry.insert("key_env", value(var.as_str()));
        }
    }
    Ok(doc.to_string())
}

/// A `default` profile: each tier on the first provider's model for it, cascading through
/// the others' in the order chosen, a local server last.
fn profile_text(chosen: &[Chosen]) -> String {
    let (local, remote): (Vec<&Chosen>, Vec<&Chosen>) = chosen
        .iter()
        .partition(|c| matches!(c.key, KeySource::None) && is_loopback_url(&c.base_url));
    let ordered: Vec<&Chosen> = remote.iter().chain(&local).copied().collect();
    let names: Vec<&str> = ordered.iter().map(|c| c.name.as_str()).collect();
    let mut text = format!(
        "# Written by `xx setup` for {}. Edit it freely; running `xx setup` again replaces it\n\
         # and keeps the previous one as default.toml.bak.\n\
         description = \"Set up by xx setup: {}\"\n\
         default_tier = \"middle\"\n\
         long_context_threshold = 60000\n",
        names.join(", "),
        names.join(", ")
    );
    for (index, tier) in ["big", "middle", "small"].iter().enumerate() {
        let mut targets: Vec<String> = ordered
            .iter()
            .map(|c| format!("{}|{}", c.name, c.tiers[index]))
            .collect();
        targets.dedup();
        let first = targets.remove(0);
        text.push_str(&format!("\n[tiers.{tier}]\nmodel = \"{first}\"\n"));
        if !targets.is_empty() {
            let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            text.push_str(&format!("cascade = [{}]\n", quoted.join(", ")));
        }
    }
    if let Some(local) = local.first() {
        text.push_str(&format!(
            "\n[tiers.local]\nmodel = \"{}|{}\"\n",
            local.name, local.tiers[1]
        ));
    }
    text.push_str(
        "\n[families]\n\"*opus*\" = \"big\"\n\"*sonnet*\" = \"middle\"\n\"*haiku*\" = \"small\"\n\n\
         [scenes]\nlong_context = \"big\"\nbackground = \"small\"\nthink = \"big\"\n",
    );
    text
}
