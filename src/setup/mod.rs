//! The first run: `xx setup` picks providers, tests each key against the provider before
//! saving it, and writes the config, the secrets file and a routing profile; [`ready`] is
//! what `xx` checks before each gateway launch.

pub mod catalog;
pub mod probe;
pub mod ready;
mod write;

use std::io::{BufRead as _, Write as _};
use std::time::Duration;

use crate::agent::Protocol;
use crate::cli::SetupArgs;
use crate::error::Error;
use crate::gateway::scan::discover::LOCAL_SERVERS;
use crate::paths::Paths;
use catalog::KNOWN;
use probe::Probe;
use write::{Chosen, KeySource};

/// A provider to test: where it is and the key to try.
struct Candidate {
    name: String,
    label: String,
    base_url: String,
    format: Protocol,
    key: KeySource,
}

/// `xx setup`.
pub fn run(paths: &Paths, args: &SetupArgs) -> Result<i32, Error> {
    let scripted = args.from_env || !args.providers.is_empty();
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let chosen = if scripted {
        scripted_run(args)?
    } else if on_terminal {
        interactive_run(args)?
    } else {
        return Err(Error::Usage(
            "xx setup asks questions, and stdin or stdout is not a terminal; from a script use `xx setup --from-env` or `xx setup --provider NAME[=URL]`".into(),
        ));
    };
    if chosen.is_empty() {
        println!(
            "nothing saved: no provider passed its test. Fix the key or URL and run `xx setup` again."
        );
        return Ok(1);
    }
    let written = write::save(paths, &chosen).map_err(Error::Usage)?;
    let names: Vec<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    println!("saved {} in {}", names.join(", "), written.config.display());
    println!("routing: {}", written.profile.display());
    if let Some(secrets) = &written.secrets {
        println!("keys: {} (mode 0600)", secrets.display());
    }
    for backup in &written.backups {
        println!("the previous version is kept as {}", backup.display());
    }
    reload_running_gateway(paths);
    println!("\nNow run: {}", next_command(paths));
    Ok(0)
}

/// Tell a running gateway to read the new files now rather than at its next poll.
fn reload_running_gateway(paths: &Paths) {
    let Ok(config) = crate::config::Config::load(&paths.config_file()) else {
        return;
    };
    if crate::sidecar::gateway_health(&config, Duration::from_millis(300)).is_err() {
        return;
    }
    let url = format!(
        "{}/api/reload",
        config.gateway.url.as_str().trim_end_matches('/')
    );
    match crate::sidecar::admin_post(paths, &url, Duration::from_secs(5)) {
        Ok(_) => println!("the running gateway has reloaded"),
        Err(e) => {
            println!("the running gateway did not reload ({e}); run `proxies restart gateway`")
        }
    }
}

/// The launch to try first: Claude Code's if it is installed, else the first installed agent.
fn next_command(paths: &Paths) -> String {
    let Ok(registry) = crate::agent::Registry::load(&paths.user_agents_dir()) else {
        return "xx cip".into();
    };
    let mut letters: Vec<char> = registry.letters().into_iter().map(|(l, _)| l).collect();
    letters.sort_by_key(|l| *l != 'c');
    let installed = letters
        .into_iter()
        .filter_map(|letter| registry.by_letter(letter))
        .find(|spec| which::which(&spec.binary).is_ok());
    match installed {
        Some(spec) => format!("xx {}ip", spec.letter),
        None => "xx cip (once an agent is installed; `xx agents` lists them)".into(),
    }
}

/// `--from-env` and `--provider`: no questions; each provider tested, the ones that pass kept.
fn scripted_run(args: &SetupArgs) -> Result<Vec<Chosen>, Error> {
    let mut candidates = Vec::new();
    for spec in &args.providers {
        candidates.push(from_flag(spec, args.store_keys)?);
    }
    if args.from_env {
        for known in KNOWN {
            if candidates.iter().any(|c| c.name == known.name) {
                continue;
            }
            if let Some((var, value)) = catalog::key_from_env(known.name) {
                candidates.push(Candidate {
                    name: known.name.into(),
                    label: known.label.into(),
                    base_url: known.base_url.into(),
                    format: known.format,
                    key: env_key(var, value, args.store_keys),
                });
            }
        }
        if !candidates.iter().any(|c| c.name == "local")
            && let Some((label, url, _)) = find_local_server()
        {
            candidates.push(Candidate {
                name: "local".into(),
                label: label.into(),
                base_url: url.into(),
                format: Protocol::Chat,
                key: KeySource::None,
            });
        }
        if candidates.is_empty() {
            return Err(Error::Usage(format!(
                "--from-env found no key: set one of {} (or run a local model server), or name a provider with --provider NAME=URL",
                KNOWN
                    .iter()
                    .map(|k| k.key_vars[0])
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut chosen = Vec::new();
    for candidate in candidates {
        print!("testing {} at {} … ", candidate.label, candidate.base_url);
        let _ = std::io::stdout().flush();
        match test(&candidate) {
            Ok(tiers) => {
                println!("ok");
                chosen.push(accept(candidate, tiers));
            }
            Err(why) => println!("not saved: {why}"),
        }
    }
    Ok(chosen)
}

fn env_key(var: String, value: String, store: bool) -> KeySource {
    if store {
        KeySource::Stored(value)
    } else {
        KeySource::Env(var)
    }
}

/// `NAME` or `NAME=URL`.
fn from_flag(spec: &str, store_keys: bool) -> Result<Candidate, Error> {
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) => (name.trim(), Some(url.trim())),
        None => (spec.trim(), None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Usage(format!(
            "--provider `{spec}`: the name must be letters, digits, `-` or `_` (NAME or NAME=URL)"
        )));
    }
    let known = catalog::known(name);
    let base_url = match (url, known, name) {
        (Some(url), _, _) => url.to_string(),
        (None, Some(known), _) => known.base_url.to_string(),
        (None, None, "local") => match find_local_server() {
            Some((_, url, _)) => url.to_string(),
            None => {
                return Err(Error::Usage(
                    "--provider local: no local model server answers at its usual address (Ollama 11434, LM Studio 1234, llama.cpp 8080, vLLM 8000, Jan 1337, text-generation-webui 5000, KoboldCpp 5001); give its URL as local=URL".into(),
                ));
            }
        },
        (None, None, _) => {
            return Err(Error::Usage(format!(
                "--provider `{name}` is not a provider setup knows ({}); give its URL as {name}=URL",
                KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            )));
        }
    };
    let key = match catalog::key_from_env(name) {
        Some((var, value)) => env_key(var, value, store_keys),
        None if name == "local" || crate::gateway::connect::is_loopback_url(&base_url) => {
            KeySource::None
        }
        None if known.is_some() => {
            return Err(Error::Usage(format!(
                "--provider {name}: {} is not set; export it, or run `xx setup` on a terminal to paste the key",
                catalog::key_var(name)
            )));
        }
        None => KeySource::None,
    };
    Ok(Candidate {
        name: name.to_string(),
        label: known.map_or(name, |k| k.label).to_string(),
        base_url,
        format: known.map_or(Protocol::Chat, |k| k.format),
        key,
    })
}

/// The provider's model list with the key; the tiers' models out of it.
fn test(candidate: &Candidate) -> Result<[String; 3], String> {
    let key = match &candidate.key {
        KeySource::None => None,
        KeySource::Env(var) => std::env::var(var).ok().map(|v| v.trim().to_string()),
        KeySource::Stored(key) => Some(key.clone()),
    };
    match probe::list_models(&candidate.base_url, candidate.format, key.as_deref()) {
        Probe::Listed(models) => {
            let pick = |index| catalog::pick_model(&candidate.name, &models, index);
            match (pick(0), pick(1), pick(2)) {
                (Some(big), Some(middle), Some(small)) => Ok([big, middle, small]),
                _ => Err("it lists no models".into()),
            }
        }
        Probe::Refused(why) | Probe::Failed(why) => Err(why),
    }
}

fn accept(candidate: Candidate, tiers: [String; 3]) -> Chosen {
    Chosen {
        name: candidate.name,
        base_url: candidate.base_url,
        format: candidate.format,
        key: candidate.key,
        tiers,
    }
}

/// The first local model server that lists models: its label, URL and model count.
fn find_local_server() -> Option<(&'static str, &'static str, usize)> {
    LOCAL_SERVERS.iter().find_map(|(_, label, url)| {
        let address = url
            .trim_start_matches("http://")
            .split('/')
            .next()?
            .parse::<std::net::SocketAddr>()
            .ok()?;
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
        match probe::list_models(url, Protocol::Chat, None) {
            Probe::Listed(models) if !models.is_empty() => Some((*label, *url, models.len())),
            _ => None,
        }
    })
}

/// Questions on the terminal.
fn interactive_run(args: &SetupArgs) -> Result<Vec<Chosen>, Error> {
    let mut ask = Ask::new();
    println!(
        "clutch setup: choose the providers your agents will use. Each key is tested before it is saved.\n"
    );
    let local = find_local_server();
    let mut defaults = Vec::new();
    for (index, known) in KNOWN.iter().enumerate() {
        let state = match catalog::key_from_env(known.name) {
            Some((var, _)) => {
                defaults.push(index + 1);
                format!("{var} is set")
            }
            None => format!("key in {}", known.key_vars[0]),
        };
        println!("  {}  {:<12} {state}", index + 1, known.label);
    }
    let local_choice = KNOWN.len() + 1;
    if let Some((label, url, count)) = local {
        defaults.push(local_choice);
        println!("  {local_choice}  {label:<12} found at {url} ({count} models)");
    }
    let other_choice = local_choice + usize::from(local.is_some());
    println!("  {other_choice}  Another OpenAI-compatible server (you give its URL)");
    let shown_defaults: Vec<String> = defaults.iter().map(usize::to_string).collect();
    let picked = loop {
        let answer = ask.line(&format!(
            "\nWhich ones? Numbers separated by spaces [{}]: ",
            shown_defaults.join(" ")
        ))?;
        let answer = if answer.trim().is_empty() {
            shown_defaults.join(" ")
        } else {
            answer
        };
        let numbers: Result<Vec<usize>, _> =
            answer.split_whitespace().map(str::parse::<usize>).collect();
        match numbers {
            Ok(numbers)
                if !numbers.is_empty()
                    && numbers.iter().all(|n| (1..=other_choice).contains(n)) =>
            {
                break numbers;
            }
            _ => println!("  give numbers from 1 to {other_choice}"),
        }
    };
    let mut chosen = Vec::new();
    for number in picked {
        let candidate = if number <= KNOWN.len() {
            let known = &KNOWN[number - 1];
            let key = ask_key(
                &mut ask,
                known.label,
                catalog::key_from_env(known.name),
                args.store_keys,
                false,
            )?;
            Candidate {
                name: known.name.into(),
                label: known.label.into(),
                base_url: known.base_url.into(),
                format: known.format,
                key,
            }
        } else if Some(number) == local.map(|_| local_choice) {
            let (label, url, _) = local.expect("offered only when found");
            Candidate {
                name: "local".into(),
                label: label.into(),
                base_url: url.into(),
                format: Protocol::Chat,
                key: KeySource::None,
            }
        } else {
            let name = loop {
                let name = ask.line("  A short name for it (letters, digits, -): ")?;
                let name = name.trim().to_string();
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    break name;
                }
                println!("  letters, digits, `-` or `_`, please");
            };
            let base_url = ask.line("  Its base URL (the API root, e.g. http://host:8000/v1): ")?;
            let base_url = base_url.trim().to_string();
            let key = ask_key(&mut ask, "Its", None, args.store_keys, true)?;
            Candidate {
                label: name.clone(),
                name,
                base_url,
                format: Protocol::Chat,
                key,
            }
        };
        if let Some(accepted) = test_until_accepted(&mut ask, candidate)? {
            chosen.push(accepted);
        }
    }
    Ok(chosen)
}

/// Test, and on a refused key offer another paste until it passes or the user skips it.
fn test_until_accepted(ask: &mut Ask, mut candidate: Candidate) -> Result<Option<Chosen>, Error> {
    loop {
        print!("  testing {} at {} … ", candidate.label, candidate.base_url);
        let _ = std::io::stdout().flush();
        match test(&candidate) {
            Ok(tiers) => {
                println!("ok ({} for the middle tier)", tiers[1]);
                return Ok(Some(accept(candidate, tiers)));
            }
            Err(why) => {
                println!("{why}");
                let again = ask.secret(&format!(
                    "  Paste another key for {} (input hidden), or Enter to skip it: ",
                    candidate.label
                ))?;
                if again.is_empty() {
                    println!("  skipped {}", candidate.label);
                    return Ok(None);
                }
                candidate.key = KeySource::Stored(again);
            }
        }
    }
}

/// A key for `label`: pasted (kept in the secrets file), `$NAME` of a variable set in this
/// shell (referenced as `key_env`), or Enter for the variable it is already in (or, when
/// `allow_none`, for no key).
fn ask_key(
    ask: &mut Ask,
    label: &str,
    from_env: Option<(String, String)>,
    store: bool,
    allow_none: bool,
) -> Result<KeySource, Error> {
    loop {
        let prompt = match (&from_env, allow_none) {
            (Some((var, _)), _) => format!(
                "  {label} key: Enter uses ${var}, or paste another or give $NAME of a variable (input hidden): "
            ),
            (None, true) => format!(
                "  {label} key: paste it or give $NAME of a variable (input hidden; Enter for none): "
            ),
            (None, false) => {
                format!("  {label} key: paste it or give $NAME of a variable (input hidden): ")
            }
        };
        let answer = ask.secret(&prompt)?;
        if answer.is_empty() {
            match &from_env {
                Some((var, value)) => return Ok(env_key(var.clone(), value.clone(), store)),
                None if allow_none => return Ok(KeySource::None),
                None => {
                    println!("  {label} needs a key");
                    continue;
                }
            }
        }
        let Some(var) = answer.strip_prefix('$') else {
            return Ok(KeySource::Stored(answer));
        };
        let var = var.trim_start_matches('{').trim_end_matches('}');
        if !crate::keys::is_var_name(var) {
            println!("  `{var}` is not a variable name (letters, digits, `_`)");
            continue;
        }
        match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            Some(value) => return Ok(env_key(var.to_string(), value.trim().to_string(), store)),
            None => println!("  {var} is not set in this shell; export it first, or paste the key"),
        }
    }
}

/// Reading answers from the terminal; a key is read with echo off, which is restored even
/// when the read fails.
struct Ask {
    stdin: std::io::Stdin,
}

impl Ask {
    fn new() -> Ask {
        Ask {
            stdin: std::io::stdin(),
        }
    }

    fn line(&mut self, prompt: &str) -> Result<String, Error> {
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let read = self
            .stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("cannot read the answer", e))?;
        if read == 0 {
            return Err(Error::Usage(
                "setup stopped: the terminal closed before every question was answered; nothing was saved".into(),
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    fn secret(&mut self, prompt: &str) -> Result<String, Error> {
        let _quiet = EchoOff::new();
        self.line(prompt).map(|a| a.trim().to_string())
    }
}

/// Terminal echo off for as long as it lives. Ctrl-C (or a hang-up) meanwhile puts echo
/// back before the process ends, so the shell is not left typing blind.
struct EchoOff {
    saved: Option<nix::sys::termios::Termios>,
    signals: Option<signal_hook::iterator::Handle>,
}

impl EchoOff {
    fn new() -> EchoOff {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return EchoOff {
                saved: None,
                signals: None,
            };
        };
        let signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ])
        .ok()
        .map(|mut signals| {
            let handle = signals.handle();
            let restore = saved.clone();
            std::thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &restore);
                    println!();
                    std::process::exit(128 + signal);
                }
            });
            handle
        });
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
        EchoOff {
            saved: Some(saved),
            signals,
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
        if let Some(signals) = self.signals.take() {
            signals.close();
        }
    }
}
