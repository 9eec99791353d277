//! The supervisor: one small process (started detached by `proxies up` or `xx`, or run by a
//! systemd unit) that starts the services in order, copies their output into size-rotated
//! logs, restarts a crashed service with exponential back-off, marks one that keeps crashing
//! as failed with its log tail, and stops everything in reverse order on SIGTERM. It holds an
//! exclusive lock on `supervisor.lock` for its whole life, so there is never more than one.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::{self, Phase, PidRecord, ServiceState, SupervisorState};
use super::{Service, health};
use crate::error::Error;
use crate::paths::Paths;

/// Crashes within [`CRASH_WINDOW`] after which a service is marked failed.
pub const MAX_CRASHES: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORTLESS_SETTLE: Duration = Duration::from_millis(500);
const LOG_MAX_BYTES: u64 = 5 * 1024 * 1024;
const LOG_KEEP: usize = 3;

enum Event {
    Exited { name: String, pid: u32, how: String },
    Restart { name: String },
    Signal(i32),
}

/// A log file that rotates itself at [`LOG_MAX_BYTES`], keeping [`LOG_KEEP`] old files.
struct RotatingLog {
    path: PathBuf,
    file: File,
    written: u64,
}

impl RotatingLog {
    fn open(path: PathBuf) -> std::io::Result<RotatingLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let written = file.metadata().map_or(0, |m| m.len());
        Ok(RotatingLog {
            path,
            file,
            written,
        })
    }

    fn write_line(&mut self, line: &str) {
        if self.written > LOG_MAX_BYTES {
            for n in (1..LOG_KEEP).rev() {
                let _ = std::fs::rename(
                    self.path.with_extension(format!("log.{n}")),
                    self.path.with_extension(format!("log.{}", n + 1)),
                );
            }
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            if let Ok(file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                self.file = file;
                self.written = 0;
            }
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.written += line.len() as u64;
        }
    }
}

struct Running {
    service: Service,
    state: ServiceState,
    crashes: Vec<Instant>,
    /// A restart was asked for: the next exit is not a crash.
    restarting: bool,
    stopping: bool,
    log: Arc<Mutex<RotatingLog>>,
}

impl Running {
    fn new(paths: &Paths, service: Service) -> Result<Running, Error> {
        let log_path = paths.log_dir().join(format!("{}.log", service.name));
        let log = RotatingLog::open(log_path.clone())
            .map_err(|e| Error::io(format!("cannot open {}", log_path.display()), e))?;
        Ok(Running {
            // Every service is on its way up until the supervisor reaches it.
            state: ServiceState {
                name: service.name.clone(),
                state: Phase::Starting,
                pid: None,
                pid_start: None,
                port: service.port,
                started_at: None,
                restarts: 0,
                last_error: None,
                log_tail: Vec::new(),
                log: log_path,
            },
            service,
            crashes: Vec::new(),
            restarting: false,
            stopping: false,
            log: Arc::new(Mutex::new(log)),
        })
    }
}

/// Run the supervisor in the foreground. Returns when told to stop; exits at once (0) when
/// another supervisor already holds the lock.
pub fn run(paths: &Paths, services: Vec<Service>) -> Result<i32, Error> {
    super::create_private_dir(&paths.runtime_dir)?;
    super::create_private_dir(&paths.log_dir())?;
    let lock = File::create(state::lock_file(paths))
        .map_err(|e| Error::io("cannot create the supervisor lock", e))?;
    let _lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err(_) => return Ok(0),
    };
    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let signal_tx = tx.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal_tx.send(Event::Signal(signal)).is_err() {
                return;
            }
        }
    });

    let me = std::process::id();
    let mut supervisor = Supervisor {
        paths: paths.clone(),
        tx,
        state: SupervisorState {
            pid: me,
            pid_start: state::start_time(me),
            started_at: state::now(),
            services: Vec::new(),
        },
        services: Vec::new(),
        job: None,
    };
    for service in services {
        supervisor.services.push(Running::new(paths, service)?);
    }
    supervisor.save();
    for index in 0..supervisor.services.len() {
        supervisor.start(index);
        supervisor.wait_healthy(index, &rx);
    }
    if let Ok(exe) = std::env::current_exe() {
        supervisor.job = Some(super::jobs::spawn(paths.clone(), exe));
    }
    supervisor.serve(&rx);
    Ok(0)
}

struct Supervisor {
    paths: Paths,
    tx: Sender<Event>,
    state: SupervisorState,
    services: Vec<Running>,
    /// The refresh job's child while one runs.
    job: Option<super::jobs::Running>,
}

impl Supervisor {
    fn save(&mut self) {
        self.state.services = self.services.iter().map(|r| r.state.clone()).collect();
        let _ = state::write_json(&state::state_file(&self.paths), &self.state);
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|r| r.service.name == name)
    }

    fn start(&mut self, index: usize) {
        let paths = self.paths.clone();
        let running = &mut self.services[index];
        let name = running.service.name.clone();
        // A port held by someone else is left alone; one held by an earlier process of ours
        // (orphaned by a supervisor that was killed) is stopped first.
        if let Some(port) = running.service.port
            && let Some(holder) = state::listener_pid(port)
        {
            let ours = state::read_pid(&state::pid_file(&paths, &name))
                .is_some_and(|r| r.pid == holder && state::is_same_process(r.pid, r.pid_start));
            if ours {
                stop_pid(holder);
            } else {
                running.state.state = Phase::Failed;
                running.state.last_error = Some(format!(
                    "port {port} is held by pid {holder} ({}), which clutch did not start and leaves alone; stop it or move {name} to another port",
                    state::cmdline(holder)
                ));
                self.save();
                return;
            }
        }
        let command = &running.service.command;
        let mut child = Command::new(&command[0]);
        child
            .args(&command[1..])
            .envs(running.service.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The services die with the supervisor, so a killed supervisor leaves no orphans.
        unsafe {
            // Its own process group, so a stop reaches whatever it started too; and killed
            // outright if the supervisor dies, even by SIGKILL, so no service (one that
            // ignores SIGTERM included) outlives it holding its port.
            child.pre_exec(|| {
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                    .map_err(std::io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        match child.spawn() {
            Err(err) => {
                running.state.state = Phase::Failed;
                running.state.last_error =
                    Some(format!("cannot start `{}`: {err}", command.join(" ")));
            }
            Ok(mut child) => {
                let pid = child.id();
                for pipe in [
                    child
                        .stdout
                        .take()
                        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                    child
                        .stderr
                        .take()
                        .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    let log = running.log.clone();
                    std::thread::spawn(move || {
                        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                            if let Ok(mut log) = log.lock() {
                                log.write_line(&format!("{line}\n"));
                            }
                        }
                    });
                }
                let tx = self.tx.clone();
                let service_name = name.clone();
                std::thread::spawn(move || {
                    let how = match child.wait() {
                        Ok(status) => describe(status),
                        Err(err) => format!("could not be waited for: {err}"),
                    };
                    let _ = tx.send(Event::Exited {
                        name: service_name,
                        pid,
                        how,
                    });
                });
                let record = PidRecord {
                    pid,
                    pid_start: state::start_time(pid),
                };
                let _ = state::write_json(&state::pid_file(&paths, &name), &record);
                running.state.state = Phase::Starting;
                running.state.pid = Some(pid);
                running.state.pid_start = record.pid_start;
                running.state.started_at = Some(state::now());
            }
        }
        self.save();
    }

    /// Wait until the service answers its health check (or has no port), handling events
    /// that arrive meanwhile.
    fn wait_healthy(&mut self, index: usize, rx: &Receiver<Event>) {
        let started = Instant::now();
        let deadline = started + self.services[index].service.start_timeout;
        loop {
            let running = &self.services[index];
            if running.state.state != Phase::Starting {
                return;
            }
            let healthy = match running.service.port {
                // Without a health check, a service is up once it has stayed alive a moment.
                None => started.elapsed() >= PORTLESS_SETTLE,
                Some(port) => health(
                    &format!("http://127.0.0.1:{port}{}", running.service.health_path),
                    Duration::from_millis(200),
                )
                .is_ok(),
            };
            if healthy {
                self.services[index].state.state = Phase::Running;
                self.save();
                return;
            }
            if Instant::now() > deadline {
                let running = &mut self.services[index];
                running.state.last_error = Some(format!(
                    "not healthy within {:?}",
                    running.service.start_timeout
                ));
                self.save();
                return;
            }
            if let Ok(event) = rx.recv_timeout(Duration::from_millis(10)) {
                self.handle(event, rx);
            }
        }
    }

    fn serve(&mut self, rx: &Receiver<Event>) {
        while let Ok(event) = rx.recv() {
            if !self.handle(event, rx) {
                return;
            }
        }
    }

    /// Returns false when the supervisor should exit.
    fn handle(&mut self, event: Event, rx: &Receiver<Event>) -> bool {
        match event {
            Event::Signal(signal) if signal == signal_hook::consts::SIGUSR1 => {
                self.take_restart_requests(rx)
            }
            Event::Signal(signal) if signal == signal_hook::consts::SIGHUP => self.reload(rx),
            Event::Signal(_) => {
                self.shutdown();
                return false;
            }
            Event::Restart { name } => {
                if let Some(index) = self.index_of(&name)
                    && self.services[index].state.state == Phase::Backoff
                {
                    self.start(index);
                    self.wait_healthy(index, rx);
                }
            }
            Event::Exited { name, pid, how } => {
                let Some(index) = self.index_of(&name) else {
                    return true;
                };
                if self.services[index].state.pid != Some(pid) {
                    return true;
                }
                let _ = std::fs::remove_file(state::pid_file(&self.paths, &name));
                let running = &mut self.services[index];
                running.state.pid = None;
                running.state.pid_start = None;
                if running.stopping {
                    running.state.state = Phase::Stopped;
                } else if running.restarting {
                    running.restarting = false;
                    running.state.restarts += 1;
                    self.start(index);
                    // Until its health check passes it is starting; after, running.
                    self.wait_healthy(index, rx);
                    return true;
                } else {
                    let now = Instant::now();
                    running
                        .crashes
                        .retain(|t| now.duration_since(*t) < CRASH_WINDOW);
                    running.crashes.push(now);
                    running.state.restarts += 1;
                    running.state.last_error = Some(how.clone());
                    if running.crashes.len() >= MAX_CRASHES {
                        running.state.state = Phase::Failed;
                        running.state.log_tail = state::tail(&running.state.log, 20);
                        running.state.last_error = Some(format!(
                            "{how}; crashed {} times within {:?}, not restarted again",
                            running.crashes.len(),
                            CRASH_WINDOW
                        ));
                    } else {
                        running.state.state = Phase::Backoff;
                        let delay = (FIRST_BACKOFF * 2u32.pow(running.crashes.len() as u32 - 1))
                            .min(MAX_BACKOFF);
                        let tx = self.tx.clone();
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            let _ = tx.send(Event::Restart { name });
                        });
                    }
                }
                self.save();
            }
        }
        true
    }

    /// `proxies restart <service>` leaves a marker file and sends SIGUSR1.
    fn take_restart_requests(&mut self, rx: &Receiver<Event>) {
        for index in 0..self.services.len() {
            let marker = self
                .paths
                .runtime_dir
                .join(format!("restart-{}", self.services[index].service.name));
            if !marker.exists() {
                continue;
            }
            // The state says `starting` before the marker goes: whoever asked waits for the
            // marker to go and then reads the state, which must not still say `failed`.
            let running = &mut self.services[index];
            running.state.state = Phase::Starting;
            self.save();
            let _ = std::fs::remove_file(&marker);
            let running = &mut self.services[index];
            match running.state.pid {
                Some(pid) if state::is_same_process(pid, running.state.pid_start) => {
                    running.restarting = true;
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                }
                _ => {
                    // A failed or stopped service: a fresh start, with its crash count
                    // cleared, and its health waited for as at start-up.
                    running.crashes.clear();
                    running.state.log_tail.clear();
                    running.state.last_error = None;
                    self.start(index);
                    self.wait_healthy(index, rx);
                }
            }
        }
    }

    /// SIGHUP: read the config again and bring `[[services]]` in line with it: a removed
    /// service is stopped, a changed one restarted with its new definition, a new one
    /// started. The gateway reloads its own config; it is told to at once. A config that
    /// does not load leaves everything as it is, with the reason in the supervisor's log.
    fn reload(&mut self, rx: &Receiver<Event>) {
        let wanted = crate::config::Config::load(&self.paths.config_file())
            .map_err(|e| e.to_string())
            .and_then(|config| {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                super::services(&config, &exe).map_err(|e| e.to_string())
            });
        let wanted = match wanted {
            Ok(wanted) => wanted,
            Err(error) => {
                eprintln!("supervisor: reload refused, services unchanged: {error}");
                return;
            }
        };
        if let Some(gateway) = self.services.iter().find(|r| r.service.name == "gateway")
            && let Some(pid) = gateway.state.pid
            && state::is_same_process(pid, gateway.state.pid_start)
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
        }
        let mut index = 0;
        while index < self.services.len() {
            let name = self.services[index].service.name.clone();
            if name != "gateway" && !wanted.iter().any(|w| w.name == name) {
                self.stop(index);
                self.services.remove(index);
                let _ = std::fs::remove_file(state::pid_file(&self.paths, &name));
                self.save();
            } else {
                index += 1;
            }
        }
        for service in wanted.into_iter().filter(|s| s.name != "gateway") {
            match self.index_of(&service.name) {
                Some(index) if self.services[index].service == service => {}
                Some(index) => {
                    self.stop(index);
                    let running = &mut self.services[index];
                    running.service = service;
                    running.state.port = running.service.port;
                    running.crashes.clear();
                    running.state.last_error = None;
                    running.state.log_tail.clear();
                    self.start(index);
                    self.wait_healthy(index, rx);
                }
                None => match Running::new(&self.paths, service) {
                    Ok(running) => {
                        self.services.push(running);
                        let index = self.services.len() - 1;
                        self.start(index);
                        self.wait_healthy(index, rx);
                    }
                    Err(error) => eprintln!("supervisor: {error}"),
                },
            }
        }
        self.save();
    }

    /// Stop service `index` and whatever it started, waiting out the grace period.
    fn stop(&mut self, index: usize) {
        let running = &mut self.services[index];
        running.stopping = true;
        if let Some(pid) = running.state.pid
            && state::is_same_process(pid, running.state.pid_start)
        {
            signal_group(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while state::is_same_process(pid, self.services[index].state.pid_start)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The group too: a child the service started may outlive it otherwise.
            signal_group(pid, Signal::SIGKILL);
        }
        let running = &mut self.services[index];
        running.state.state = Phase::Stopped;
        running.state.pid = None;
        running.stopping = false;
    }

    fn shutdown(&mut self) {
        let job = self
            .job
            .as_ref()
            .and_then(|running| running.lock().ok().and_then(|pid| *pid));
        if let Some(pid) = job {
            stop_pid(pid);
        }
        for index in (0..self.services.len()).rev() {
            self.stop(index);
            let name = self.services[index].service.name.clone();
            let _ = std::fs::remove_file(state::pid_file(&self.paths, &name));
        }
        let _ = std::fs::remove_file(state::state_file(&self.paths));
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!(
            "killed by signal {signal}{}",
            Signal::try_from(signal)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
        _ => "exited".into(),
    }
}

/// `signal` to the process group a service leads (it was started as the leader of its own,
/// so the group's id is its pid, and that id stays taken while anyone is left in the group).
fn signal_group(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), signal);
}

/// SIGTERM, then SIGKILL after the grace period; used only on processes proven ours.
pub fn stop_pid(pid: u32) {
    let start = state::start_time(pid);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while state::is_same_process(pid, start) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if state::is_same_process(pid, start) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
