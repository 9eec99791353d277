//! The holder: one small process per session that owns the agent's PTY and a Unix socket.
//! No other process's death — the terminal, `xx`, the gateway — reaches the agent. It feeds a
//! terminal model with everything the agent prints, so a client that attaches later gets the
//! current screen redrawn, then a size nudge so full-screen programs repaint. A client that
//! vanishes (even by SIGKILL) shows up as end-of-file on the socket: the session is simply
//! detached.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde::{Deserialize, Serialize};

use super::{Meta, frame, meta_file, socket};
use crate::error::Error;
use crate::paths::Paths;
use crate::sidecar::state;

/// What the launching `xx` hands the holder (a 0600 file in the 0700 sessions dir, removed
/// as soon as it is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub agent: String,
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env_set: BTreeMap<String, String>,
    pub env_unset: Vec<String>,
    pub cwd: PathBuf,
    pub rows: u16,
    pub cols: u16,
    /// What the crash ledger records to relaunch it.
    pub code: String,
    pub model: Option<String>,
    pub profile: Option<String>,
    /// The agent's own id for this session, when clutch gave or resumed one.
    #[serde(default)]
    pub agent_session: Option<String>,
    /// Start the agent again in this form when it dies from a signal.
    #[serde(default)]
    pub restart: Option<Restart>,
    pub secrets: Vec<String>,
}

/// The argv that picks the session up again (continue, or resume by id), and how many times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restart {
    pub argv: Vec<String>,
    pub limit: u32,
}

pub fn plan_file(paths: &Paths, name: &str) -> PathBuf {
    super::dir(paths).join(format!("{name}.plan.json"))
}

struct Shared {
    parser: vt100::Parser,
    client: Option<UnixStream>,
    meta: Meta,
    meta_path: PathBuf,
}

impl Shared {
    fn save(&self) {
        let _ = state::write_json(&self.meta_path, &self.meta);
    }
}

fn pty_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::io(what.to_string(), std::io::Error::other(err.to_string()))
}

/// Run the holder for session `name` until its program exits.
pub fn run(paths: &Paths, name: &str) -> Result<i32, Error> {
    let plan_path = plan_file(paths, name);
    let launch: Launch = serde_json::from_slice(
        &std::fs::read(&plan_path).map_err(|e| Error::io("cannot read the session plan", e))?,
    )
    .map_err(|e| Error::io("the session plan is unreadable", std::io::Error::other(e)))?;
    let _ = std::fs::remove_file(&plan_path);

    let pair = native_pty_system()
        .openpty(PtySize {
            rows: launch.rows,
            cols: launch.cols,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| pty_error("cannot open a PTY", e))?;
    let spawn = |argv: &[String]| {
        let mut command = CommandBuilder::new(&launch.program);
        command.args(argv);
        command.cwd(&launch.cwd);
        for name in &launch.env_unset {
            command.env_remove(name);
        }
        for (k, v) in &launch.env_set {
            command.env(k, v);
        }
        pair.slave
            .spawn_command(command)
            .map_err(|e| pty_error("cannot start the agent", e))
    };
    let child = spawn(&launch.argv)?;
    let killer = Arc::new(Mutex::new(child.clone_killer()));
    let mut child_pid = child.process_id();
    let mut reader = pair
        .master
        .try_clone_reader()
        .map_err(|e| pty_error("cannot read the PTY", e))?;
    let writer = Arc::new(Mutex::new(
        pair.master
            .take_writer()
            .map_err(|e| pty_error("cannot write the PTY", e))?,
    ));
    let master = Arc::new(Mutex::new(pair.master));

    let me = std::process::id();
    let shared = Arc::new(Mutex::new(Shared {
        parser: vt100::Parser::new(launch.rows, launch.cols, 0),
        client: None,
        meta: Meta {
            name: name.to_string(),
            agent: launch.agent.clone(),
            cwd: launch.cwd.clone(),
            holder_pid: me,
            holder_start: state::start_time(me),
            child_pid,
            started_at: state::now(),
            attached: false,
            exit_code: None,
            restarts: 0,
            killed: false,
        },
        meta_path: meta_file(paths, name),
    }));
    shared.lock().expect("fresh lock").save();
    super::ledger::write(
        paths,
        &super::ledger::Record {
            name: name.to_string(),
            boot_id: super::ledger::boot_id(),
            agent: launch.agent.clone(),
            code: launch.code.clone(),
            model: launch.model.clone(),
            profile: launch.profile.clone(),
            cwd: launch.cwd.clone(),
            argv: launch.argv.clone(),
            agent_session: launch.agent_session.clone(),
            env: launch
                .env_set
                .iter()
                .filter(|(k, v)| !super::ledger::is_secret(k, v, &launch.secrets))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            started_at: state::now(),
        },
    );

    // Bound last: once the socket answers, the session's records exist.
    let sock = socket(paths, name);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| Error::io(format!("cannot listen on {}", sock.display()), e))?;

    // `xx kill` sends SIGTERM: pass it on to the agent, whose exit ends the holder (and is
    // never answered with a restart).
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        let killer = killer.clone();
        let stopping = stopping.clone();
        let agent = shared.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGTERM {
                    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                    // The whole process group the agent leads on its terminal, as a hang-up
                    // would reach it: agents that run as several processes (Gemini CLI
                    // relaunches itself) would otherwise leave the others running.
                    let pid = agent.lock().ok().and_then(|s| s.meta.child_pid);
                    if let Some(pid) = pid {
                        let group = nix::unistd::Pid::from_raw(pid as i32);
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGHUP);
                        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
                    }
                    let _ = killer.lock().map(|mut k| k.kill());
                }
            }
        });
    }

    // Program output: into the screen model, and to the client if one is attached.
    let output = shared.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut s = output.lock().expect("holder state");
            s.parser.process(&buf[..n]);
            if let Some(client) = s.client.as_mut()
                && frame::write(client, frame::OUTPUT, &buf[..n]).is_err()
            {
                s.client = None;
                s.meta.attached = false;
                s.save();
            }
        }
    });

    // Clients: attach (the newest one wins) or peek.
    let accept_shared = shared.clone();
    let accept_writer = writer.clone();
    let accept_master = master.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve_client(stream, &accept_shared, &accept_writer, &accept_master);
        }
    });

    let mut restarts = 0;
    let code = loop {
        let (code, signal) = wait_for(child_pid);
        let again = launch.restart.as_ref().filter(|r| {
            signal.is_some()
                && restarts < r.limit
                && !stopping.load(std::sync::atomic::Ordering::SeqCst)
        });
        let Some(restart) = again else {
            break code;
        };
        restarts += 1;
        let notice = format!(
            "\r\n[clutch: {} ended by signal {}; starting it again to continue ({restarts}/{})]\r\n",
            launch.agent,
            signal.unwrap_or_default(),
            restart.limit
        );
        {
            let mut s = shared.lock().expect("holder state");
            s.parser.process(notice.as_bytes());
            if let Some(client) = s.client.as_mut() {
                let _ = frame::write(client, frame::OUTPUT, notice.as_bytes());
            }
        }
        let child = match spawn(&restart.argv) {
            Ok(child) => child,
            Err(_) => break code,
        };
        child_pid = child.process_id();
        if let Ok(mut k) = killer.lock() {
            *k = child.clone_killer();
        }
        let mut s = shared.lock().expect("holder state");
        s.meta.child_pid = child_pid;
        s.meta.restarts = restarts;
        s.save();
    };
    drop(pair.slave);
    // The agent ended on its own (not with the machine): nothing to restore.
    super::ledger::remove(paths, name);
    let mut s = shared.lock().expect("holder state");
    s.meta.exit_code = Some(code);
    s.meta.attached = false;
    s.save();
    if let Some(client) = s.client.as_mut() {
        let _ = frame::write(client, frame::EXIT, &code.to_be_bytes());
    }
    let _ = std::fs::remove_file(&sock);
    Ok(code)
}

fn resize(
    master: &Mutex<Box<dyn portable_pty::MasterPty + Send>>,
    shared: &Mutex<Shared>,
    rows: u16,
    cols: u16,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    if let Ok(m) = master.lock() {
        let _ = m.resize(PtySize {
            rows,
            cols,
            pixel_width: 0,
            pixel_height: 0,
        });
    }
    // vt100 forgets which rows wrapped on any set_size, even to the same size, and a
    // reattach at the same size must not turn wrapped lines into broken ones.
    if let Ok(mut s) = shared.lock()
        && s.parser.screen().size() != (rows, cols)
    {
        s.parser.screen_mut().set_size(rows, cols);
    }
}

/// One column narrower and back, on the pty alone: the agent gets SIGWINCH twice and
/// repaints, and the screen model keeps every cell.
fn nudge(master: &Mutex<Box<dyn portable_pty::MasterPty + Send>>, rows: u16, cols: u16) {
    if rows == 0 || cols < 2 {
        return;
    }
    if let Ok(m) = master.lock() {
        for cols in [cols - 1, cols] {
            let _ = m.resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            });
        }
    }
}

fn serve_client(
    mut stream: UnixStream,
    shared: &Arc<Mutex<Shared>>,
    writer: &Arc<Mutex<Box<dyn std::io::Write + Send>>>,
    master: &Arc<Mutex<Box<dyn portable_pty::MasterPty + Send>>>,
) {
    let Ok((kind, payload)) = frame::read(&mut stream) else {
        return;
    };
    match kind {
        frame::PEEK => {
            let text = shared
                .lock()
                .map(|s| s.parser.screen().contents())
                .unwrap_or_default();
            let _ = frame::write(&mut stream, frame::TEXT, text.as_bytes());
        }
        frame::ATTACH => {
            let (rows, cols) = frame::parse_size(&payload).unwrap_or((24, 80));
            resize(master, shared, rows, cols);
            {
                let mut s = shared.lock().expect("holder state");
                // Redraw: the agent's alternate screen if it is on one, clear, the screen as
                // the model has it, then its input modes (mouse, bracketed paste, keypad)
                // and cursor, so the new terminal is in the state the agent left the old in.
                let screen = s.parser.screen();
                let mut redraw = Vec::new();
                if screen.alternate_screen() {
                    redraw.extend_from_slice(b"\x1b[?1049h");
                }
                redraw.extend_from_slice(b"\x1b[H\x1b[2J");
                redraw.extend(screen.contents_formatted());
                redraw.extend(screen.input_mode_formatted());
                redraw.extend(screen.cursor_state_formatted());
                let Ok(mut out) = stream.try_clone() else {
                    return;
                };
                if frame::write(&mut out, frame::OUTPUT, &redraw).is_err() {
                    return;
                }
                s.client = Some(out);
                s.meta.attached = true;
                s.save();
            }
            // Nudge the pty's size so full-screen programs repaint themselves. Only the pty:
            // narrowing the screen model would cut off its last column for good.
            nudge(master, rows, cols);
            let shared = shared.clone();
            let writer = writer.clone();
            let master = master.clone();
            let me = stream.try_clone().ok();
            std::thread::spawn(move || {
                loop {
                    match frame::read(&mut stream) {
                        Ok((frame::INPUT, bytes)) => {
                            if let Ok(mut w) = writer.lock() {
                                let _ = w.write_all(&bytes);
                                let _ = w.flush();
                            }
                        }
                        Ok((frame::RESIZE, size)) => {
                            if let Some((rows, cols)) = frame::parse_size(&size) {
                                resize(&master, &shared, rows, cols);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                // End of file: the client detached or died. Only forget it if it is still
                // the current one (a newer attach may have replaced it).
                let mut s = shared.lock().expect("holder state");
                let current = match (&s.client, &me) {
                    (Some(a), Some(b)) => same_socket(a, b),
                    _ => false,
                };
                if current {
                    s.client = None;
                    s.meta.attached = false;
                    s.save();
                }
            });
        }
        _ => {}
    }
}

fn same_socket(a: &UnixStream, b: &UnixStream) -> bool {
    use std::os::fd::AsRawFd as _;
    // Clones of one socket share the underlying file description: compare inode numbers.
    let stat = |fd: i32| {
        nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .ok()
            .map(|s| s.st_ino)
    };
    stat(a.as_raw_fd()) == stat(b.as_raw_fd())
}

/// Wait for the agent: its exit code, or 128 + the signal number (as shells report it) and the
/// signal's name when a signal ended it.
fn wait_for(pid: Option<u32>) -> (i32, Option<&'static str>) {
    use nix::sys::wait::{WaitStatus, waitpid};
    let Some(pid) = pid else {
        return (1, None);
    };
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => return (code, None),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return (128 + signal as i32, Some(signal.as_str()));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (1, None),
        }
    }
}
