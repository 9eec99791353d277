//! Turning a [`LaunchPlan`] into a running agent: write its files, then replace this process
//! with the agent (exec), so the agent owns the terminal, the signals and the exit code. Also
//! renders a plan as a copy-pasteable shell command for `--dry-run`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::agent::{AgentSpec, LaunchPlan, PlannedFile};
use crate::error::Error;

const MASK: &str = "****";

/// Find the agent's executable on PATH, or explain how to install it.
pub fn find_program(spec: &AgentSpec) -> Result<PathBuf, Error> {
    spec.binaries()
        .find_map(|name| which::which(name).ok())
        .ok_or_else(|| Error::NotInstalled {
            display_name: spec.display_name.clone(),
            binary: spec.binaries().collect::<Vec<_>>().join("` or `"),
            install: spec.install.clone(),
        })
}

/// Write the plan's files, print its notices, and exec the agent. Returns only on failure.
pub fn exec(plan: &LaunchPlan, program: &Path) -> Error {
    if let Err(err) = write_files(&plan.files) {
        return err;
    }
    for notice in &plan.notices {
        eprintln!("xx: {notice}");
    }
    let mut command = Command::new(program);
    command.arg0(&plan.program).args(&plan.argv);
    for name in &plan.env_unset {
        command.env_remove(name);
    }
    command.envs(&plan.env_set);
    let err = command.exec();
    Error::io(format!("cannot start {}", program.display()), err)
}

/// Write each file atomically with its mode, in directories only the user can enter.
/// A file whose contents are already right is left alone.
pub fn write_files(files: &[PlannedFile]) -> Result<(), Error> {
    for file in files {
        let context = || format!("cannot write {}", file.path.display());
        if std::fs::read(&file.path).is_ok_and(|old| old == file.contents.as_bytes()) {
            let mode = std::fs::metadata(&file.path).map(|m| m.permissions().mode() & 0o777);
            if mode.is_ok_and(|m| m == file.mode) {
                continue;
            }
        }
        let dir = file.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(context(), e))?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            file.path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(file.mode)
            .open(&tmp)
            .and_then(|mut f| {
                f.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
                f.write_all(file.contents.as_bytes())
            })
            .and_then(|()| std::fs::rename(&tmp, &file.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(context(), e));
        }
    }
    Ok(())
}

/// The plan as a shell command a person can paste: `env -u … NAME=value … program args`,
/// preceded by comments naming the files clutch writes first. Secrets are masked.
pub fn render_command(plan: &LaunchPlan) -> String {
    let mask = |text: &str| -> String {
        plan.secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_string(), |acc, secret| {
                acc.replace(secret.as_str(), MASK)
            })
    };
    let mut out = String::new();
    for notice in &plan.notices {
        out.push_str(&format!("# note: {notice}\n"));
    }
    for file in &plan.files {
        out.push_str(&format!(
            "# clutch writes {} (mode {:o}) before launch\n",
            file.path.display(),
            file.mode
        ));
    }
    let mut words: Vec<String> = Vec::new();
    if !plan.env_unset.is_empty() || !plan.env_set.is_empty() {
        words.push("env".into());
    }
    for name in &plan.env_unset {
        words.push(format!("-u {}", quote(name)));
    }
    for (name, value) in &plan.env_set {
        words.push(format!("{name}={}", quote(&mask(value))));
    }
    words.push(quote(&plan.program));
    words.extend(plan.argv.iter().map(|a| quote(&mask(a))));
    out.push_str(&words.join(" "));
    out.push('\n');
    out
}

fn quote(word: &str) -> String {
    shlex::try_quote(word).map_or_else(
        |_| format!("'{}'", word.replace('\0', "")),
        |q| q.into_owned(),
    )
}
