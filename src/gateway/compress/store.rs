//! The recall store: each condensed output's original, content-addressed, in
//! `<state>/recall/<id>` (0600 in a 0700 dir), kept for a number of days and up to a size.
//! `xx recall <id>` prints one back. The configured provider keys are removed before an
//! original is written, as from every other state file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Hex characters of the SHA-256 in a recall id.
const ID_LEN: usize = 12;

/// The recall id of `original`: the start of its SHA-256, in hex.
pub fn id_of(original: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, original.as_bytes());
    digest.as_ref()[..ID_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    max_age: Duration,
    max_bytes: u64,
}

impl Store {
    pub fn new(state_dir: &Path, retention_days: u64, max_mb: u64) -> Store {
        Store {
            dir: state_dir.join("recall"),
            max_age: Duration::from_secs(retention_days.saturating_mul(86_400)),
            max_bytes: max_mb.saturating_mul(1024 * 1024),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keep `original` under `id`; a copy already there is only marked as used again.
    pub fn put(&self, id: &str, original: &str, keys: &[String]) -> std::io::Result<()> {
        let path = self.dir.join(id);
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            // Still in use: retention counts from the last time it was condensed.
            return file.set_modified(SystemTime::now());
        }
        crate::paths::ensure_private_dir(&self.dir).map_err(std::io::Error::other)?;
        let mut text = std::borrow::Cow::Borrowed(original);
        for key in keys.iter().filter(|k| k.len() >= 8) {
            if text.contains(key.as_str()) {
                text = text.replace(key.as_str(), "[redacted]").into();
            }
        }
        // Not `state::write_private`: its fsync would put a disk flush on the request path,
        // and an original lost to a power cut only makes one `xx recall` say so.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = self.dir.join(format!(".{id}.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        drop(file);
        std::fs::rename(&tmp, &path)
    }

    /// The original kept under `id` (a unique prefix of at least 6 characters will do).
    pub fn get(&self, id: &str) -> Result<String, String> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 6 || id.len() > ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{id}` is not a recall id: it is the {ID_LEN} hex characters after `xx recall` in a condensed output"
            ));
        }
        let mut found: Vec<PathBuf> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(&id) {
                    found.push(entry.path());
                }
            }
        }
        match found.as_slice() {
            [one] => std::fs::read_to_string(one)
                .map_err(|e| format!("cannot read {}: {e}", one.display())),
            [] => Err(format!(
                "no output {id} in {}: it was never condensed here, or it is older than the store keeps (`compress.retention_days`)",
                self.dir.display()
            )),
            _ => Err(format!(
                "{id} names {} outputs in {}: give more of the id",
                found.len(),
                self.dir.display()
            )),
        }
    }

    /// Remove originals older than the retention, then the oldest until the store fits its
    /// size. Returns how many went.
    pub fn prune(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file()
                    .then(|| (meta.modified().unwrap_or(now), meta.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut removed = 0;
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        for (modified, len, path) in files {
            let old = now.duration_since(modified).unwrap_or_default() > self.max_age;
            if (old || total > self.max_bytes) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
                total -= len;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originals_come_back_by_id_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), 14, 256);
        let original = "line\nkey sk-test-1234567890 here\n";
        let id = id_of(original);
        assert_eq!(id.len(), 12);
        store
            .put(&id, original, &["sk-test-1234567890".to_string()])
            .unwrap();
        assert_eq!(store.get(&id).unwrap(), "line\nkey [redacted] here\n");
        assert_eq!(store.get(&id[..6]).unwrap(), "line\nkey [redacted] here\n");
        assert!(store.get("zz").unwrap_err().contains("not a recall id"));
        assert!(
            store
                .get("abcdef")
                .unwrap_err()
                .contains("compress.retention_days")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(store.dir().join(&id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn pruning_keeps_the_store_within_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), 14, 0);
        let id = id_of("x");
        store.put(&id, "x", &[]).unwrap();
        assert_eq!(store.prune(), 1);
        assert!(store.get(&id).is_err());
    }
}
