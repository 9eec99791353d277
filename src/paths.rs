//! Every directory clutch reads or writes, decided in one place.
//!
//! By default the XDG locations are used: config in `$XDG_CONFIG_HOME/clutch`, state and logs in
//! `$XDG_STATE_HOME/clutch`, sockets and pid files in `$XDG_RUNTIME_DIR/clutch` (falling back to
//! a per-user directory under the temp dir). When `CLUTCH_HOME` is set, everything lives below
//! it instead, which is how tests keep away from the real home.

use std::path::{Path, PathBuf};

/// The resolved set of directories. Cheap to build; nothing is created until it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Resolve from the process environment.
    pub fn from_env() -> Paths {
        if let Some(home) = std::env::var_os("CLUTCH_HOME").filter(|v| !v.is_empty()) {
            return Paths::under(Path::new(&home));
        }
        let home = dirs::home_dir().unwrap_or_else(std::env::temp_dir);
        let config_dir = dirs::config_dir()
            .unwrap_or_else(|| home.join(".config"))
            .join("clutch");
        let state_dir = dirs::state_dir()
            .unwrap_or_else(|| home.join(".local/state"))
            .join("clutch");
        let runtime_dir = match dirs::runtime_dir() {
            Some(dir) => dir.join("clutch"),
            None => std::env::temp_dir().join(format!("clutch-{}", nix::unistd::getuid())),
        };
        Paths {
            config_dir,
            state_dir,
            runtime_dir,
        }
    }

    /// Everything below one root, as with `CLUTCH_HOME`.
    pub fn under(root: &Path) -> Paths {
        Paths {
            config_dir: root.join("config"),
            state_dir: root.join("state"),
            runtime_dir: root.join("run"),
        }
    }

    /// The user's config file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// Agent specs that override or extend the built-in ones.
    pub fn user_agents_dir(&self) -> PathBuf {
        self.config_dir.join("agents")
    }

    /// Routing profiles that override or extend the built-in ones.
    pub fn user_profiles_dir(&self) -> PathBuf {
        self.config_dir.join("profiles")
    }

    /// Files clutch writes for an agent (settings, extensions, a relocated agent home).
    pub fn agent_files_dir(&self) -> PathBuf {
        self.state_dir.join("agent-files")
    }

    /// Where `proxies service install` writes the systemd user unit.
    pub fn systemd_user_dir(&self) -> PathBuf {
        if std::env::var_os("CLUTCH_HOME").is_some_and(|v| !v.is_empty()) {
            return self.config_dir.join("systemd");
        }
        dirs::config_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("systemd/user")
    }

    /// Log files of the services clutch runs.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The gateway's admin token (mode 0600).
    pub fn admin_token_file(&self) -> PathBuf {
        self.config_dir.join("admin-token")
    }
}

/// Create `dir` (and its parents) with mode 0700, or check the one that is there: it must be a
/// real directory owned by this user that no one else can write to. Another local user who
/// made `/tmp/clutch-<uid>` first could otherwise plant pid files and sockets in it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(format!(
            "refusing to use {}: it is not a directory (a link?); remove it and run again",
            dir.display()
        ));
    }
    if meta.uid() != me {
        return Err(format!(
            "refusing to use {}: it belongs to uid {}, not to you (uid {me}); remove it, or set XDG_RUNTIME_DIR or CLUTCH_HOME to a directory of your own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing to use {}: others can write to it (mode {:o}); `chmod 700` it and run again",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}
