//! Python virtual environments with packages from PyPI, made once each and
//! remade when what they should hold changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::{cargo_target_dir, run_command};

/// The seed's client as the seed installs it: plain `pip install aiokafka`,
/// no extras (so no lz4 or zstd codec). The tests read eddy's output with
/// it; the bench runs the Python bus on it.
pub const AIOKAFKA: &str = "aiokafka==0.14.0";

/// A venv with plain aiokafka; its `python`.
pub fn aiokafka() -> anyhow::Result<PathBuf> {
    venv(&cargo_target_dir().join("python/aiokafka"), AIOKAFKA)
}

/// A venv at `dir` holding `wanted` (pip requirements, space-separated);
/// its `python`.
pub fn venv(dir: &Path, wanted: &str) -> anyhow::Result<PathBuf> {
    let python = dir.join("bin/python");
    let stamp = dir.join("installed");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(wanted) {
        println!(
            "xtask: installing {wanted} from PyPI into {}",
            dir.display()
        );
        let _ = fs::remove_dir_all(dir);
        run_command(Command::new("python3").args(["-m", "venv"]).arg(dir))
            .context("cannot make a Python venv (is python3-venv installed?)")?;
        run_command(
            Command::new(&python)
                .args(["-m", "pip", "install", "-q"])
                .args(wanted.split_whitespace()),
        )
        .with_context(|| format!("cannot install {wanted} from PyPI"))?;
        fs::write(&stamp, wanted)?;
    }
    Ok(python)
}
