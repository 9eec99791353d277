//! Command-line types for `xx`, and nothing else: raw flags as typed, before any resolution
//! (that is [`crate::agent::plan`]'s job).

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Codes: <agent><mode>[<route>][<tier>]
  agents  c Claude Code  x Codex  e Gemini CLI  q Qwen Code  o OpenCode  p Pi  h Hermes
          a Ante  g Antigravity   (`xx agents` lists them with install state)
  modes   i init  c continue  r resume (picker, or -s <id>)  s session by id (-s)
          n non-interactive;  I C R = headless (needs a prompt)
  routes  p proxy (default)  b bypass (gateway, agent keeps its model)  d direct (no gateway)
  tiers   d n k q named tiers from config;  m best  f free  t tool  r reasoning  v verifier
          s fast (model-scan kinds);  0-9 profile slots

Examples:
  xx cip                      Claude Code, new session, through the gateway
  xx xcpd                     Codex, continue, through the gateway, tier d (DeepSeek)
  xx cid                      Claude Code straight to Anthropic, inherited redirects removed
  xx cI -p 'fix the tests'    Claude Code headless
  xx xR -s <id> explain it    Codex headless, resume session <id>, prompt from the words
  xx oip -m some/model        OpenCode with an explicit model
  xx qin -n                   print the Qwen Code command instead of running it
  xx cip -- --verbose         everything after -- goes to the agent untouched

Exit codes: the agent's own when it runs; 2 bad code, option or config; 127 agent not installed;
1 any other failure.";

/// `xx`: start any coding agent with the right flags, through the clutch gateway.
#[derive(Debug, Parser)]
#[command(
    name = "xx",
    version,
    about = "Start any coding agent with the right flags, through the clutch gateway",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct XxArgs {
    #[command(subcommand)]
    pub command: Option<XxCommand>,
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// A launch: the code, its options and what goes to the agent.
#[derive(Debug, Args, Default)]
pub struct LaunchArgs {
    /// The short code, e.g. `cip`.
    pub code: Option<String>,
    /// Prompt words, joined with spaces (instead of -p).
    #[arg(allow_hyphen_values = false)]
    pub words: Vec<String>,
    /// Model to use (beats the tier letter).
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Session id, for the `s`, `r` and `R` modes.
    #[arg(short, long, value_name = "ID")]
    pub session: Option<String>,
    /// The prompt (headless modes need one).
    #[arg(short, long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// Read the prompt from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// Gateway routing profile (the `/p/<profile>` path segment) instead of the agent's own.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Print the command instead of running it (secrets masked).
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print the resolved plan to stderr before running.
    #[arg(short, long)]
    pub verbose: bool,
    /// Run the agent directly in this terminal, without a session holder.
    #[arg(long)]
    pub no_guard: bool,
    /// Arguments for the agent itself, after `--`.
    #[arg(last = true, value_name = "AGENT ARGS")]
    pub extra: Vec<String>,
}

/// `xx setup`'s flags; with none, on a terminal, it asks.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Add every known provider whose key variable is set (OPENROUTER_API_KEY,
    /// ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, DEEPSEEK_API_KEY) and a local
    /// model server if one answers; ask nothing.
    #[arg(long)]
    pub from_env: bool,
    /// A provider to add, asking nothing: a known name (openrouter, anthropic, openai,
    /// gemini, deepseek, local), `NAME=URL` for any OpenAI-compatible server, or a known name
    /// with another URL. Its key comes from `<NAME>_API_KEY`. Repeatable.
    #[arg(long = "provider", value_name = "NAME[=URL]")]
    pub providers: Vec<String>,
    /// Copy keys from the environment into clutch's secrets file (0600) instead of
    /// referring to their variables.
    #[arg(long)]
    pub store_keys: bool,
}

#[derive(Debug, Subcommand)]
pub enum XxCommand {
    /// List the agents: letter, installed or not, version, verified or not.
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// Check agents, config, the gateway and which keys are set.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Shell integration: aliases and completion.
    Shell {
        #[command(subcommand)]
        command: ShellCommand,
    },
    /// List sessions: name, agent, state (attached, detached, exited), age, exit code, cwd.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Attach to a session (the most recent detached one without a name). Ctrl-] detaches.
    Attach { name: Option<String> },
    /// End a session's agent.
    Kill { name: String },
    /// Print a session's current screen as text.
    Peek { name: String },
    /// Relaunch the sessions a crash took down, each in its agent's continue form, detached.
    Restore,
    /// What your agents used and cost, and what routing saved: per day (default), month,
    /// agent session, model or agent, from the gateway's usage ledger.
    Usage {
        /// How to group: daily, monthly, session, model or agent.
        #[arg(value_parser = ["daily", "monthly", "session", "model", "agent"], default_value = "daily")]
        group: String,
        /// From this local date on (YYYY-MM-DD or YYYYMMDD).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Up to and including this local date.
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The gateway's dashboard: print its URL with the admin token (the gateway trades the
    /// token for a cookie), or open it in a browser with --open.
    Dashboard {
        #[arg(long)]
        open: bool,
    },
    /// Choose providers, test each key against the provider and write the config: questions
    /// on a terminal, or from flags in a script.
    Setup(SetupArgs),
    /// Model-scan: list, probe and rank every model your providers offer, for the `m f t r v s`
    /// tier letters and profiles' `scan:<kind>` entries.
    Scan {
        #[command(subcommand)]
        command: ScanCommand,
    },
    /// Condense a tool output (standard input to standard output) as the gateway does for
    /// agents; the original is kept for `xx recall`.
    Compress {
        /// The command that produced the output (it picks the filter: cargo, git, pytest…).
        #[arg(long, value_name = "COMMAND")]
        command: Option<String>,
        /// An error result: only a long uniform middle is elided.
        #[arg(long)]
        error: bool,
        /// Say on standard error how much was saved.
        #[arg(long)]
        stats: bool,
    },
    /// Print the original of a condensed tool output (the id its last line names).
    Recall { id: String },
    /// Run the gateway in the foreground (Ctrl-C stops it).
    Gateway {
        /// Address to listen on instead of the one in gateway.url.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print the completion script for a shell.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// List every provider's models, probe a few (free ones only by default), rank them per
    /// kind and write the routing snapshot.
    Refresh {
        /// Only this provider.
        #[arg(long, value_name = "P")]
        provider: Option<String>,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The ranking in force: every kind's top models, or one kind's list.
    Show {
        /// best, free, tool, reasoning, verifier or fast.
        kind: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShellCommand {
    /// Print aliases and completion; add `eval "$(xx shell init bash)"` to your rc file.
    Init {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `proxies`: the lifecycle of the clutch gateway and its sidecar services.
#[derive(Debug, Parser)]
#[command(
    name = "proxies",
    version,
    about = "Start, stop and watch the clutch gateway and its sidecar services"
)]
pub struct ProxiesArgs {
    #[command(subcommand)]
    pub command: Option<ProxiesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ProxiesCommand {
    /// Start every service that is not running and wait until all are healthy.
    Up,
    /// Stop every service clutch started (and only those).
    Down,
    /// State, pid, uptime, memory, CPU, port, health, restarts and last error of each service.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print a service's log (all services without a name).
    Logs {
        #[arg(short, long)]
        follow: bool,
        service: Option<String>,
    },
    /// Restart one service, or everything.
    Restart { service: Option<String> },
    /// Apply config edits now: `[[services]]` added, changed or removed, and the gateway's
    /// routing (what SIGHUP to the supervisor does).
    Reload,
    /// A live view of requests, errors, models and breakers.
    Watch {
        /// Draw once and exit.
        #[arg(long)]
        once: bool,
    },
    /// The gateway's circuit breakers: list them, or `reset [ID]` (every one without an id).
    Breakers {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<BreakersCommand>,
    },
    /// Print a shell completion script for `proxies`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Show or check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Install or remove a systemd user unit that starts the services at login.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BreakersCommand {
    /// Close a breaker (`provider|model`), or all of them, so the next request tries again.
    Reset { id: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    Show,
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write and enable a systemd user unit that runs the supervisor.
    Install {
        /// Also a timer that runs the model-scan refresh every scan.interval_hours.
        #[arg(long)]
        scan_timer: bool,
    },
    /// Disable and remove the units.
    Uninstall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
