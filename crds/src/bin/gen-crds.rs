//! Writes the CRD YAML files into a directory (the Helm chart's `crds/`), or with `--check`
//! only reports the files that differ.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: gen-crds [--check] DIR";

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') || dir.is_some() => {
                eprintln!("gen-crds: unexpected argument {a:?}\n{USAGE}");
                return ExitCode::FAILURE;
            }
            a => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("gen-crds: no directory given\n{USAGE}");
        return ExitCode::FAILURE;
    };
    let files = match citoroute_crds::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gen-crds: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for (name, yaml) in files {
        let path = dir.join(&name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                eprintln!(
                    "gen-crds: {} is not what the code generates",
                    path.display()
                );
                stale += 1;
            }
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml)) {
            eprintln!("gen-crds: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}", path.display());
    }
    if stale > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
