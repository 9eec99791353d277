//! What `xx` does with its parsed arguments: dispatch a subcommand, or plan and start a launch.

use std::collections::BTreeMap;
use std::io::Read as _;

use crate::agent::plan::{self, Context, LaunchPlan, LaunchRequest};
use crate::agent::{AgentSpec, Registry};
use crate::cli::{LaunchArgs, ScanCommand, ShellCommand, XxArgs, XxCommand};
use crate::code::{Action, Code, Mode, Route};
use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;
use crate::session::holder::Restart;
use crate::{code, inventory, launch, shell};

/// Run `proxies`.
pub fn run_proxies(args: crate::cli::ProxiesArgs) -> Result<i32, Error> {
    use crate::cli::{ConfigCommand, ProxiesCommand, ServiceCommand};
    use crate::sidecar::commands;
    let paths = Paths::from_env();
    match args
        .command
        .unwrap_or(ProxiesCommand::Status { json: false })
    {
        ProxiesCommand::Up => commands::up(&paths),
        ProxiesCommand::Down => commands::down(&paths),
        ProxiesCommand::Status { json } => commands::status(&paths, json),
        ProxiesCommand::Logs { follow, service } => {
            commands::logs(&paths, follow, service.as_deref())
        }
        ProxiesCommand::Restart { service } => commands::restart(&paths, service.as_deref()),
        ProxiesCommand::Watch { once } => commands::watch(&paths, once),
        ProxiesCommand::Reload => commands::reload(&paths),
        ProxiesCommand::Completions { shell } => {
            print!("{}", crate::shell::proxies_completion_script(shell));
            Ok(0)
        }
        ProxiesCommand::Breakers { json, command } => match command {
            None => commands::breakers(&paths, json),
            Some(crate::cli::BreakersCommand::Reset { id }) => {
                commands::reset_breakers(&paths, id.as_deref())
            }
        },
        ProxiesCommand::Config {
            command: ConfigCommand::Show,
        } => commands::config_show(&paths),
        ProxiesCommand::Config {
            command: ConfigCommand::Check,
        } => commands::config_check(&paths),
        ProxiesCommand::Service {
            command: ServiceCommand::Install { scan_timer },
        } => commands::service(&paths, true, scan_timer),
        ProxiesCommand::Service {
            command: ServiceCommand::Uninstall,
        } => commands::service(&paths, false, false),
    }
}

/// Run `xx`; returns the exit code for a command that finishes, or never returns for a launch
/// that execs the agent.
pub fn run_xx(args: XxArgs) -> Result<i32, Error> {
    let paths = Paths::from_env();
    match args.command {
        Some(XxCommand::Agents { json }) => inventory::print_agents(&paths, json),
        Some(XxCommand::Doctor { json }) => inventory::doctor(&paths, json),
        Some(XxCommand::Shell {
            command: ShellCommand::Init { shell },
        }) => {
            print!("{}", shell::init_script(shell));
            Ok(0)
        }
        Some(XxCommand::Ls { json }) => {
            crate::session::ledger::notice_once(&paths);
            crate::session::client::ls(&paths, json)
        }
        Some(XxCommand::Restore) => restore(&paths),
        Some(XxCommand::Attach { name }) => {
            let config = Config::load(&paths.config_file())?;
            crate::session::client::attach(&paths, name.as_deref(), config.launcher.detach_key.0)
        }
        Some(XxCommand::Kill { name }) => crate::session::client::kill(&paths, &name),
        Some(XxCommand::Peek { name }) => crate::session::client::peek(&paths, &name),
        Some(XxCommand::Setup(setup)) => crate::setup::run(&paths, &setup),
        Some(XxCommand::Dashboard { open }) => dashboard(&paths, open),
        Some(XxCommand::Usage {
            group,
            since,
            until,
            json,
        }) => crate::gateway::usage::report::run(
            &paths,
            &crate::gateway::usage::report::Ask {
                group: crate::gateway::usage::query::Group::parse(&group)
                    .expect("clap accepts only the listed groups"),
                since,
                until,
                json,
            },
        ),
        Some(XxCommand::Scan { command }) => match command {
            ScanCommand::Refresh { provider, json } => {
                crate::gateway::scan::show::refresh(&paths, provider, json, false)
            }
            ScanCommand::Show { kind, json } => {
                crate::gateway::scan::show::show(&paths, kind, json)
            }
        },
        Some(XxCommand::Compress {
            command,
            error,
            stats,
        }) => crate::gateway::compress::cli::run_compress(
            &paths,
            &crate::gateway::compress::cli::Ask {
                command,
                is_error: error,
                stats,
            },
        ),
        Some(XxCommand::Recall { id }) => crate::gateway::compress::cli::run_recall(&paths, &id),
        Some(XxCommand::Gateway { listen }) => {
            crate::gateway::run_foreground(&paths, listen.as_deref())
        }
        Some(XxCommand::Completions { shell }) => {
            print!("{}", shell::completion_script(shell));
            Ok(0)
        }
        None => launch_agent(args.launch, &paths),
    }
}

/// The model-scan snapshot for the tier letters, or why there is none.
fn scan_snapshot(
    paths: &Paths,
    config: &Config,
) -> Result<crate::gateway::scan::snapshot::Snapshot, crate::gateway::scan::snapshot::Refused> {
    use crate::gateway::scan::snapshot;
    snapshot::load(
        &snapshot::path(paths, &config.scan),
        config.scan.max_age_hours,
    )
}

/// `xx dashboard`: start the gateway if need be, then print (or open) the dashboard's URL.
fn dashboard(paths: &Paths, open: bool) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    crate::sidecar::ensure_gateway(paths, &config)?;
    let token = crate::gateway::admin::token::read(paths).ok_or_else(|| {
        Error::Usage(format!(
            "the gateway runs but its admin token in {} cannot be read",
            paths.admin_token_file().display()
        ))
    })?;
    let url = format!(
        "{}/dashboard?token={token}",
        config.gateway.url.as_str().trim_end_matches('/')
    );
    if open {
        let opener = ["xdg-open", "open"]
            .into_iter()
            .find_map(|program| which::which(program).ok());
        match opener {
            Some(program) => {
                std::process::Command::new(program)
                    .arg(&url)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| Error::io("cannot start the browser", e))?;
                println!("opened the dashboard; if no browser appeared, open:\n{url}");
            }
            None => println!("no xdg-open or open here; open this in a browser:\n{url}"),
        }
    } else {
        println!("{url}");
    }
    Ok(0)
}

fn launch_agent(args: LaunchArgs, paths: &Paths) -> Result<i32, Error> {
    let Some(code_text) = &args.code else {
        print!("{}", shell::long_help());
        return Ok(0);
    };
    crate::session::ledger::notice_once(paths);
    let config_path = paths.config_file();
    let config = Config::load(&config_path)?;
    let registry = Registry::load(&paths.user_agents_dir())?;
    let code = code::parse(code_text, &registry.letters())?;
    let spec = registry
        .by_letter(code.agent)
        .expect("the parser accepts only registered letters");

    // Interactive launches on a terminal run in a session that outlives this terminal.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let held = config.launcher.guard
        && !args.no_guard
        && !args.dry_run
        && !code.mode.headless
        && on_terminal;
    let request = LaunchRequest {
        code: Some(code),
        model: args.model.clone(),
        session: args.session.clone(),
        prompt: prompt_from(&args)?,
        profile: args.profile.clone(),
        extra: args.extra.clone(),
        // A held session is named up front so a crash can be resumed by id.
        new_session_id: if held { new_uuid() } else { None },
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let snapshot = scan_snapshot(paths, &config);
    let ctx = Context {
        config: &config,
        config_path: config_path.display().to_string(),
        files_dir: paths.agent_files_dir(),
        is_root: nix::unistd::geteuid().is_root(),
        env: &env,
        snapshot: snapshot.as_ref().map_err(ToString::to_string),
    };
    let plan = plan::build(spec, &request, &ctx)?;

    if args.verbose || args.dry_run {
        eprintln!(
            "xx: agent={} code={} route={} model={} profile={} gateway={}",
            plan.agent,
            plan.code,
            code.route.name(),
            plan.model.as_deref().unwrap_or("(agent default)"),
            plan.profile.as_deref().unwrap_or("-"),
            plan.gateway.as_deref().unwrap_or("-"),
        );
    }
    if args.dry_run {
        print!("{}", launch::render_command(&plan));
        return Ok(0);
    }
    if args.verbose {
        eprint!("{}", launch::render_command(&plan));
    }
    let program = launch::find_program(spec)?;
    if plan.gateway.is_some() {
        crate::sidecar::ensure_gateway(paths, &config)?;
        if let Some(profile) = &plan.profile {
            crate::setup::ready::check(paths, &config, profile)?;
        }
    }
    if held {
        let restart = restart_plan(spec, code, &plan, &ctx)?;
        return crate::session::client::launch(
            paths,
            &plan,
            &program,
            restart,
            config.launcher.detach_key.0,
        );
    }
    Err(launch::exec(&plan, &program))
}

/// The launch that picks a held session up again: resume by id when the agent's own id for
/// it is known and the agent can resume by id, its continue form otherwise, and a new session
/// when it can do neither.
fn follow_up(
    spec: &AgentSpec,
    mut code: Code,
    model: Option<&str>,
    profile: Option<&str>,
    agent_session: Option<&str>,
) -> LaunchRequest {
    let (action, session) = match agent_session {
        Some(id) if spec.modes.resume_id.is_some() => (Action::Session, Some(id.to_string())),
        _ if spec.modes.continue_.is_some() => (Action::Continue, None),
        _ => (Action::Init, None),
    };
    code.mode = Mode {
        action,
        headless: false,
    };
    code.tier = None;
    let profile = profile.map(|p| {
        if code.route == Route::Bypass {
            p.trim_end_matches("-bypass").to_string()
        } else {
            p.to_string()
        }
    });
    LaunchRequest {
        code: Some(code),
        model: model
            .filter(|m| spec.gateway.default_model.as_deref() != Some(*m))
            .map(str::to_string),
        profile,
        session,
        ..Default::default()
    }
}

/// How a held agent that dies from a signal starts again (`launcher.restart_on_signal`): in
/// its follow-up form, and only when that picks the conversation up (never as a new session).
fn restart_plan(
    spec: &AgentSpec,
    code: Code,
    plan: &LaunchPlan,
    ctx: &Context<'_>,
) -> Result<Option<Restart>, Error> {
    let limit = ctx.config.launcher.restart_on_signal;
    if limit == 0 {
        return Ok(None);
    }
    let again = follow_up(
        spec,
        code,
        plan.model.as_deref(),
        plan.profile.as_deref(),
        plan.agent_session.as_deref(),
    );
    if again.code.is_some_and(|c| c.mode.action == Action::Init) {
        return Ok(None);
    }
    Ok(Some(Restart {
        argv: plan::build(spec, &again, ctx)?.argv,
        limit,
    }))
}

/// A random (version 4) UUID from the kernel.
fn new_uuid() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .ok()
        .map(|id| id.trim().to_string())
}

/// `xx restore`: each session lost in a crash comes back detached, in its recorded directory,
/// resumed by id when the agent's id is known, else with its continue form (a new session
/// when the agent can do neither).
fn restore(paths: &Paths) -> Result<i32, Error> {
    let lost = crate::session::ledger::lost(paths);
    if lost.is_empty() {
        println!("nothing to restore");
        return Ok(0);
    }
    let config_path = paths.config_file();
    let config = Config::load(&config_path)?;
    let registry = Registry::load(&paths.user_agents_dir())?;
    let mut failed = 0;
    for record in lost {
        let outcome = (|| -> Result<String, Error> {
            let code = code::parse(&record.code, &registry.letters())?;
            let spec = registry
                .by_letter(code.agent)
                .expect("the parser accepts only registered letters");
            std::env::set_current_dir(&record.cwd)
                .map_err(|e| Error::io(format!("cannot enter {}", record.cwd.display()), e))?;
            let request = follow_up(
                spec,
                code,
                record.model.as_deref(),
                record.profile.as_deref(),
                record.agent_session.as_deref(),
            );
            let env: BTreeMap<String, String> = std::env::vars().collect();
            let snapshot = scan_snapshot(paths, &config);
            let ctx = Context {
                config: &config,
                config_path: config_path.display().to_string(),
                files_dir: paths.agent_files_dir(),
                is_root: nix::unistd::geteuid().is_root(),
                env: &env,
                snapshot: snapshot.as_ref().map_err(ToString::to_string),
            };
            let plan = plan::build(spec, &request, &ctx)?;
            let program = launch::find_program(spec)?;
            if plan.gateway.is_some() {
                crate::sidecar::ensure_gateway(paths, &config)?;
            }
            let restart = restart_plan(spec, code, &plan, &ctx)?;
            let name = crate::session::client::start(paths, &plan, &program, (24, 80), restart)?;
            crate::session::ledger::remove(paths, &record.name);
            Ok(name)
        })();
        match outcome {
            Ok(name) => println!(
                "restored {} as {name} in {} (`xx attach {name}`)",
                record.name,
                record.cwd.display()
            ),
            Err(err) => {
                failed += 1;
                eprintln!("xx: could not restore {}: {err}", record.name);
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The prompt comes from exactly one of -p, the words after the code, or --stdin.
fn prompt_from(args: &LaunchArgs) -> Result<Option<String>, Error> {
    let sources = [args.prompt.is_some(), !args.words.is_empty(), args.stdin];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(Error::Usage(
            "give the prompt one way only: -p <text>, words after the code, or --stdin \
             (to pass words to the agent itself, put them after --)"
                .into(),
        ));
    }
    if args.stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("cannot read the prompt from stdin", e))?;
        return Ok(Some(text.trim_end_matches('\n').to_string()));
    }
    if !args.words.is_empty() {
        return Ok(Some(args.words.join(" ")));
    }
    Ok(args.prompt.clone())
}

/// A closed pipe (`proxies status | head`, a pager quit early) ends the command quietly with
/// exit 0, as the reader wanted no more; `println!` would otherwise panic with exit 101.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") || message.contains("os error 32") {
            std::process::exit(0);
        }
        default(info);
    }));
}
