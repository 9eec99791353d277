//! `proxies`: the gateway and sidecar lifecycle. Exit codes: 0 when everything asked for is up
//! (or done), 1 when something is down or failed, 2 for bad input or config.

use clap::Parser as _;

fn main() {
    clutch::app::quiet_on_broken_pipe();
    let result = match clutch::sidecar::hidden_entry() {
        Some(result) => result,
        None => clutch::app::run_proxies(clutch::cli::ProxiesArgs::parse()),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("proxies: {err}");
            err.exit_code()
        }
    };
    std::process::exit(code);
}
