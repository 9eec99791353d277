//! The admin token: a random secret made on the gateway's first start and kept in a 0600 file
//! in clutch's config dir. Admin endpoints want it even on loopback, so a web page (which
//! cannot read the file) cannot reload the config, reset breakers or read usage, while `xx`
//! and `proxies`, running as the user, read the file and keep working with no setup.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::paths::{self, Paths};

/// The header that carries it (`Authorization: Bearer` works too).
pub const HEADER: &str = "x-clutch-admin-token";

/// The token in `paths`' config dir, made now if there is none yet. A file that others could
/// read or write, or that someone else owns, is refused: its token may be known.
pub fn load_or_create(paths: &Paths) -> Result<String, String> {
    let file = paths.admin_token_file();
    if let Some(token) = read_checked(&file)? {
        return Ok(token);
    }
    paths::ensure_private_dir(&paths.config_dir)?;
    let token = random_hex(32).map_err(|e| format!("cannot make an admin token: {e}"))?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| f.write_all(token.as_bytes()));
    match written {
        Ok(()) => Ok(token),
        // Another process made it first: theirs is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_checked(&file)?
            .ok_or_else(|| format!("{}: empty admin token file", file.display())),
        Err(e) => Err(format!("cannot write {}: {e}", file.display())),
    }
}

/// The token as `xx` and `proxies` read it (None: no gateway has made one yet, or the file is
/// not safe to trust).
pub fn read(paths: &Paths) -> Option<String> {
    read_checked(&paths.admin_token_file()).ok().flatten()
}

fn read_checked(file: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::symlink_metadata(file) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let shown = file.display();
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a plain file; delete it and start the gateway again"
        ));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{shown} belongs to uid {}, not to you; delete it and start the gateway again",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} is open to other users (mode {:o}); delete it so a new token is made, or `chmod 600` it",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(1024).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let token = text.trim().to_string();
    Ok((!token.is_empty()).then_some(token))
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `presented` matches `token`, in time that does not depend on where they differ.
pub fn matches(token: &str, presented: &str) -> bool {
    let (a, b) = (token.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn made_once_private_and_refused_when_others_can_read_it() {
        let home = tempfile::tempdir().unwrap();
        let paths = Paths::under(home.path());
        let token = load_or_create(&paths).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(load_or_create(&paths).unwrap(), token, "kept");
        assert_eq!(read(&paths).as_deref(), Some(token.as_str()));
        let file = paths.admin_token_file();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create(&paths).unwrap_err();
        assert!(error.contains("open to other users"), "{error}");
        assert!(read(&paths).is_none());
        assert!(matches("abc", "abc") && !matches("abc", "abd") && !matches("abc", "ab"));
    }
}
