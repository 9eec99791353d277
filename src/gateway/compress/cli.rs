//! `xx compress` (stdin to stdout, as the gateway condenses a tool output) and `xx recall`
//! (an original back from the store).

use std::io::{Read as _, Write as _};

use super::{Input, Settings, compress, store::Store};
use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;

/// Largest input `xx compress` reads.
const MAX_INPUT: u64 = 256 * 1024 * 1024;

pub struct Ask {
    pub command: Option<String>,
    pub is_error: bool,
    pub stats: bool,
}

pub fn run_compress(paths: &Paths, ask: &Ask) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read standard input", e))?;
    let output = String::from_utf8_lossy(&bytes);
    let settings = Settings {
        min_bytes: config.compress.min_bytes,
        read_max_bytes: config.compress.read_max_bytes,
    };
    let input = Input {
        output: &output,
        command: ask.command.as_deref(),
        tool: None,
        is_error: ask.is_error,
    };
    let condensed = compress(&input, &settings);
    let text = match &condensed {
        Some(condensed) => {
            let store = store_of(paths, &config);
            let keys: Vec<String> = config
                .all_providers()
                .values()
                .flat_map(crate::config::ProviderConfig::keys)
                .collect();
            store.put(&condensed.id, &output, &keys).map_err(|e| {
                Error::io(
                    format!("cannot keep the original in {}", store.dir().display()),
                    e,
                )
            })?;
            condensed.text.as_str()
        }
        None => output.as_ref(),
    };
    write_out(text.as_bytes(), !text.ends_with('\n'))?;
    if ask.stats {
        let after = text.len();
        let kind = condensed.as_ref().map_or("unchanged", |c| c.kind.name());
        eprintln!(
            "clutch: {} -> {} bytes ({:.1}% fewer, about {} tokens saved; {kind})",
            output.len(),
            after,
            100.0 * (1.0 - after as f64 / output.len().max(1) as f64),
            output.len().saturating_sub(after) / 4,
        );
    }
    Ok(0)
}

pub fn run_recall(paths: &Paths, id: &str) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    let original = store_of(paths, &config).get(id).map_err(Error::Usage)?;
    write_out(original.as_bytes(), false)?;
    Ok(0)
}

fn store_of(paths: &Paths, config: &Config) -> Store {
    Store::new(
        &paths.state_dir,
        config.compress.retention_days,
        config.compress.store_max_mb,
    )
}

/// A closed pipe (`xx recall id | head`) is not an error.
fn write_out(bytes: &[u8], newline: bool) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(bytes)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write the output", e))
        }
        _ => Ok(()),
    }
}
