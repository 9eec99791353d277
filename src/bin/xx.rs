//! `xx`: the short-code launcher. Exit codes: the agent's own once it runs (exec), 2 for a bad
//! code, option or config, 127 for an agent that is not installed, 1 for anything else.

use clap::Parser as _;

fn main() {
    let args = clutch::cli::XxArgs::parse();
    let code = match clutch::app::run_xx(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xx: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}
