//! The attach side: start a holder for a launch, attach this terminal to a session (raw mode
//! restored on every exit path, resizes forwarded, a detach key), and the `xx ls`, `attach`,
//! `kill` and `peek` commands.

use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};

use super::holder::{Launch, Restart, plan_file};
use super::{Meta, frame, list, meta_file, new_name, socket};
use crate::agent::LaunchPlan;
use crate::error::Error;
use crate::paths::Paths;

/// Puts the terminal in raw mode; the saved mode comes back when this is dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// (rows, cols) of this terminal.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws: nix::libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { nix::libc::ioctl(0, nix::libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Start a holder for `plan` and attach to it; returns the agent's exit code (or 0 on detach).
pub fn launch(
    paths: &Paths,
    plan: &LaunchPlan,
    program: &Path,
    restart: Option<Restart>,
    detach_key: u8,
) -> Result<i32, Error> {
    let name = start(
        paths,
        plan,
        program,
        terminal_size().unwrap_or((24, 80)),
        restart,
    )?;
    attach_to(paths, &name, detach_key)
}

/// Start a holder for `plan` without attaching; returns the session's name.
pub fn start(
    paths: &Paths,
    plan: &LaunchPlan,
    program: &Path,
    (rows, cols): (u16, u16),
    restart: Option<Restart>,
) -> Result<String, Error> {
    crate::launch::write_files(&plan.files)?;
    for notice in &plan.notices {
        eprintln!("xx: {notice}");
    }
    crate::sidecar::create_private_dir(&super::dir(paths))?;
    let name = new_name(paths, &plan.agent);
    let launch = Launch {
        agent: plan.agent.clone(),
        program: program.to_path_buf(),
        argv: plan.argv.clone(),
        env_set: plan.env_set.clone(),
        env_unset: plan.env_unset.iter().cloned().collect(),
        cwd: std::env::current_dir()
            .map_err(|e| Error::io("cannot read the working directory", e))?,
        rows,
        cols,
        code: plan.code.clone(),
        model: plan.model.clone(),
        profile: plan.profile.clone(),
        agent_session: plan.agent_session.clone(),
        restart,
        secrets: plan
            .secrets
            .iter()
            .cloned()
            .chain(plan.env_set.get(crate::agent::plan::KEY_ENV).cloned())
            .collect(),
    };
    let plan_path = plan_file(paths, &name);
    std::fs::write(&plan_path, serde_json::to_vec(&launch).expect("plain data"))
        .map_err(|e| Error::io("cannot write the session plan", e))?;
    std::fs::set_permissions(
        &plan_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| Error::io("cannot protect the session plan", e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
    // The holder's own small binary when it is installed beside this one (it stays resident
    // for the session's whole life); this binary re-executed otherwise.
    let small = exe.with_file_name(HOLDER_BINARY);
    let mut command = if small.is_file() {
        Command::new(small)
    } else {
        let mut command = Command::new(exe);
        command.arg("__hold");
        command
    };
    command
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut holder = command
        .spawn()
        .map_err(|e| Error::io("cannot start the session holder", e))?;
    std::thread::spawn(move || {
        let _ = holder.wait();
    });
    let sock = socket(paths, &name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            return Err(Error::Usage(format!(
                "the session holder for {name} did not come up; try `xx --no-guard …`"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(name)
}

/// The per-session holder program, built beside `xx`.
pub const HOLDER_BINARY: &str = "clutch-hold";

/// Attach this terminal to session `name` until it is detached (by `detach_key`) or its
/// program exits.
pub fn attach_to(paths: &Paths, name: &str, detach_key: u8) -> Result<i32, Error> {
    session_socket(paths, name)?;
    let mut stream = UnixStream::connect(socket(paths, name))
        .map_err(|e| Error::io(format!("cannot attach to {name} (see `xx ls`)"), e))?;
    let (rows, cols) = terminal_size().unwrap_or((24, 80));
    frame::write(&mut stream, frame::ATTACH, &frame::size(rows, cols))
        .map_err(|e| Error::io("cannot attach", e))?;
    let raw = RawMode::enable();

    // Resizes: SIGWINCH -> the new size to the holder.
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
        && let Ok(mut out) = stream.try_clone()
    {
        std::thread::spawn(move || {
            for _ in signals.forever() {
                if let Some((rows, cols)) = terminal_size()
                    && frame::write(&mut out, frame::RESIZE, &frame::size(rows, cols)).is_err()
                {
                    return;
                }
            }
        });
    }
    // Keystrokes: to the holder, until the detach key.
    let (detach_tx, detach_rx) = std::sync::mpsc::channel::<()>();
    if let Ok(mut out) = stream.try_clone() {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Some(at) = buf[..n].iter().position(|b| *b == detach_key) {
                    let _ = frame::write(&mut out, frame::INPUT, &buf[..at]);
                    let _ = detach_tx.send(());
                    let _ = out.shutdown(std::net::Shutdown::Both);
                    return;
                }
                if frame::write(&mut out, frame::INPUT, &buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    let mut stdout = std::io::stdout();
    let code = loop {
        match frame::read(&mut stream) {
            Ok((frame::OUTPUT, bytes)) => {
                let _ = stdout.write_all(&bytes);
                let _ = stdout.flush();
            }
            Ok((frame::EXIT, code)) => break code.try_into().map(i32::from_be_bytes).unwrap_or(1),
            Ok(_) => {}
            Err(_) => {
                drop(raw);
                if detach_rx.try_recv().is_ok() {
                    // The agent's terminal modes end with the attachment: the alternate
                    // screen, mouse reporting, bracketed paste, application keys and a hidden
                    // cursor would otherwise stay on in the user's shell. The notice then goes
                    // on a line of its own below everything, never over the agent's last line.
                    print!(
                        "\x1b[0m\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[999;1H\r\n[detached from {name}; `xx attach {name}` to come back]\r\n"
                    );
                    let _ = std::io::stdout().flush();
                    return Ok(0);
                }
                let code = Meta::read(&meta_file(paths, name)).and_then(|m| m.exit_code);
                return Ok(code.unwrap_or(1));
            }
        }
    };
    drop(raw);
    Ok(code)
}

/// `xx ls`.
pub fn ls(paths: &Paths, json: bool) -> Result<i32, Error> {
    if json {
        let list: Vec<serde_json::Value> = list(paths)
            .into_iter()
            .map(|meta| {
                serde_json::json!({"name": meta.name, "agent": meta.agent, "state": meta.state(),
                    "started_at": meta.started_at, "exit_code": meta.exit_code, "cwd": meta.cwd,
                    "restarts": meta.restarts})
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(list));
        return Ok(0);
    }
    println!(
        "{:<20} {:<12} {:<9} {:>7} {:>5}  CWD",
        "NAME", "AGENT", "STATE", "AGE", "EXIT"
    );
    for meta in list(paths) {
        let age = crate::sidecar::state::now().saturating_sub(meta.started_at);
        let age = if age < 3600 {
            format!("{}m", age / 60)
        } else {
            format!("{}h", age / 3600)
        };
        println!(
            "{:<20} {:<12} {:<9} {:>7} {:>5}  {}",
            meta.name,
            meta.agent,
            meta.state(),
            age,
            meta.exit_code.map_or("-".into(), |c| c.to_string()),
            meta.cwd.display()
        );
    }
    Ok(0)
}

/// `xx attach [name]`: the most recent detached session when no name is given.
pub fn attach(paths: &Paths, name: Option<&str>, detach_key: u8) -> Result<i32, Error> {
    let name = match name {
        Some(name) => name.to_string(),
        None => list(paths)
            .into_iter()
            .find(|m| m.state() == "detached")
            .map(|m| m.name)
            .ok_or_else(|| Error::Usage("no detached session to attach to (see `xx ls`)".into()))?,
    };
    attach_to(paths, &name, detach_key)
}

/// `xx kill <name>`: the agent gets SIGTERM through its holder, and the session stays in
/// `xx ls` as killed. Killing a session that has already ended takes it off the list.
pub fn kill(paths: &Paths, name: &str) -> Result<i32, Error> {
    let file = meta_file(paths, name);
    let meta = Meta::read(&file)
        .ok_or_else(|| Error::Usage(format!("no session `{name}` (see `xx ls`)")))?;
    if matches!(meta.state(), "exited" | "killed" | "lost") {
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(socket(paths, name));
        println!("removed {name} ({}) from the list", meta.state());
        return Ok(0);
    }
    if crate::sidecar::state::is_same_process(meta.holder_pid, meta.holder_start) {
        crate::sidecar::supervisor::stop_pid(meta.holder_pid);
    }
    // The holder may have written its last state on the way out; mark that one.
    let mut ended = Meta::read(&file).unwrap_or(meta);
    ended.killed = true;
    ended.attached = false;
    let _ = crate::sidecar::state::write_json(&file, &ended);
    let _ = std::fs::remove_file(socket(paths, name));
    println!("killed {name} (`xx kill {name}` again takes it off `xx ls`)");
    Ok(0)
}

/// A session's socket, or a plain error when there is no such session or it has ended
/// (rather than the OS error of connecting to a socket that is not there).
fn session_socket(paths: &Paths, name: &str) -> Result<std::path::PathBuf, Error> {
    let path = socket(paths, name);
    match Meta::read(&meta_file(paths, name)) {
        None if !path.exists() => Err(Error::Usage(format!(
            "no session `{name}` (`xx ls` lists them)"
        ))),
        Some(meta) if matches!(meta.state(), "exited" | "killed") => Err(Error::Usage(format!(
            "session `{name}` has ended ({}{}); `xx ls` lists it",
            meta.state(),
            meta.exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default()
        ))),
        _ => Ok(path),
    }
}

/// `xx peek <name>`: the current screen as text.
pub fn peek(paths: &Paths, name: &str) -> Result<i32, Error> {
    session_socket(paths, name)?;
    let mut stream = UnixStream::connect(socket(paths, name))
        .map_err(|e| Error::io(format!("cannot reach {name} (see `xx ls`)"), e))?;
    frame::write(&mut stream, frame::PEEK, &[])
        .map_err(|e| Error::io("cannot ask for the screen", e))?;
    let (_, text) = frame::read(&mut stream).map_err(|e| Error::io("no screen came back", e))?;
    print!("{}", String::from_utf8_lossy(&text));
    Ok(0)
}
