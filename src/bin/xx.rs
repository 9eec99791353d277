//! `xx`: the short-code launcher. Exit codes: the agent's own once it runs (exec), 2 for a bad
//! code, option or config, 127 for an agent that is not installed, 1 for anything else.

use clap::Parser as _;

/// The gateway runs in this binary and allocates for every request and stream event; glibc's
/// allocator took about a sixth of its CPU under load, mimalloc a fraction of that. Built
/// with `no_thp`: otherwise mimalloc asks for transparent huge pages on its arenas, and the
/// idle gateway's RSS doubles (7.8 -> 15.9 MB) for memory it never uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    clutch::app::quiet_on_broken_pipe();
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
