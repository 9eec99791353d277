//! Shell integration: the alias files in `shell/` (embedded), followed by the completion
//! script clap generates, printed by `xx shell init <shell>`; and `xx completions <shell>`.

use clap::CommandFactory as _;
use clap_complete::Shell as CompleteShell;

use crate::cli::{Shell, XxArgs};

const BASH: &str = include_str!("../shell/xx.bash");
const ZSH: &str = include_str!("../shell/xx.zsh");
const FISH: &str = include_str!("../shell/xx.fish");

/// Aliases plus completion, ready for `eval` (bash, zsh) or `source` (fish).
pub fn init_script(shell: Shell) -> String {
    let aliases = match shell {
        Shell::Bash => BASH,
        Shell::Zsh => ZSH,
        Shell::Fish => FISH,
    };
    format!("{aliases}\n{}", completion_script(shell))
}

/// The completion script for `xx`.
pub fn completion_script(shell: Shell) -> String {
    script_for(shell, &mut XxArgs::command(), "xx")
}

/// `proxies completions <shell>`.
pub fn proxies_completion_script(shell: Shell) -> String {
    script_for(shell, &mut crate::cli::ProxiesArgs::command(), "proxies")
}

fn script_for(shell: Shell, command: &mut clap::Command, name: &str) -> String {
    let target = match shell {
        Shell::Bash => CompleteShell::Bash,
        Shell::Zsh => CompleteShell::Zsh,
        Shell::Fish => CompleteShell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(target, command, name, &mut out);
    String::from_utf8(out).expect("clap_complete writes UTF-8")
}

/// `xx` with no arguments: the full help.
pub fn long_help() -> String {
    XxArgs::command().render_long_help().to_string()
}
