//! Embeds the data directories (`agents/`, `profiles/`) so the binary works on its own and
//! adding a file there needs no Rust change.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut code = String::new();
    for (dir, constant) in [
        ("agents", "BUILTIN_AGENTS"),
        ("profiles", "BUILTIN_PROFILES"),
    ] {
        println!("cargo:rerun-if-changed={dir}");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        files.sort();
        writeln!(code, "pub static {constant}: &[(&str, &str)] = &[").unwrap();
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let abs = std::fs::canonicalize(&path).unwrap();
            println!("cargo:rerun-if-changed={}", path.display());
            writeln!(
                code,
                "    ({stem:?}, include_str!({:?})),",
                abs.display().to_string()
            )
            .unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    std::fs::write(Path::new(&out_dir).join("embedded.rs"), code).unwrap();
}
