//! `xx`: the short-code launcher. Exit codes: the agent's own once it runs (exec), 2 for a bad
//! code, option or config, 127 for an agent that is not installed, 1 for anything else.

use clap::Parser as _;

fn main() {
    let result = match clutch::sidecar::hidden_entry() {
        Some(result) => result,
        None => clutch::app::run_xx(clutch::cli::XxArgs::parse()),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xx: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}
