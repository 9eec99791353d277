//! `clutch-hold <session>`: the per-session holder that owns an agent's PTY (see
//! `clutch::session::holder`). It is a binary of its own, not `xx` re-executed, because it stays
//! resident for the session's whole life: it maps only the PTY and terminal-model code.
//! Exit codes: the agent's own, 2 without a session name, 1 when the session cannot start.

fn main() {
    let paths = clutch::paths::Paths::from_env();
    let code = match std::env::args().nth(1) {
        Some(name) => clutch::session::holder::run(&paths, &name).unwrap_or_else(|err| {
            eprintln!("clutch-hold: {err}");
            err.exit_code()
        }),
        None => {
            eprintln!("clutch-hold: give the session name (xx starts this; see `xx ls`)");
            2
        }
    };
    std::process::exit(code);
}
