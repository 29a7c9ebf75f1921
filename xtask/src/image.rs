//! `cargo xtask image`: eddy's container image, built with podman from the
//! project's Dockerfile. No image can be pulled on these machines, so the
//! `local` stage is built: onto a Debian base made once with mmdebstrap
//! (cached as an image), from eddy and the example plugins built here.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{build_plugins, cargo_target_dir, root, run_command};

/// The image `cargo xtask image` makes, and the base it makes it on.
pub const IMAGE: &str = "localhost/eddy:dev";
const BASE: &str = "localhost/eddy-base:bookworm-essential";
/// What the base holds beyond Debian's essential packages: TLS roots,
/// OpenSSL for librdkafka, useradd. No apt: nothing is installed later.
const BASE_PACKAGES: &str = "ca-certificates,libssl3,passwd";
/// Files no one reads in a container, left out of the base.
const BASE_EXCLUDES: [&str; 4] = [
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
];

/// Where the image's files are made.
fn dir() -> PathBuf {
    cargo_target_dir().join("image")
}

/// podman's settings here: the `runc` runtime (the default crun fails on
/// these machines' cgroups) and ulimits under the hard limits.
pub fn containers_conf() -> anyhow::Result<PathBuf> {
    let path = dir().join("containers.conf");
    std::fs::create_dir_all(dir())?;
    std::fs::write(
        &path,
        "[engine]\nruntime = \"runc\"\n\n[containers]\n\
         default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
    )?;
    Ok(path)
}

/// `podman` with [`containers_conf`].
pub fn podman() -> anyhow::Result<Command> {
    let mut podman = Command::new("podman");
    podman.env("CONTAINERS_CONF", containers_conf()?);
    Ok(podman)
}

/// Builds [`IMAGE`] and prints its size.
pub fn build() -> anyhow::Result<()> {
    for tool in ["podman", "mmdebstrap"] {
        if which(tool).is_none() {
            bail!("{tool} is missing: apt-get install -y podman runc mmdebstrap");
        }
    }
    ensure_base()?;
    let plugins = build_plugins()?;
    let release = crate::bench::build_eddy(&[])?;
    // The build context: eddy (without its symbol tables) and plugins/.
    let context = dir().join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    std::fs::create_dir_all(context.join("plugins"))?;
    let eddy = context.join("eddy");
    std::fs::copy(&release, &eddy)?;
    if which("strip").is_some() {
        run_command(Command::new("strip").arg(&eddy))?;
    }
    for plugin in plugins {
        let name = plugin.file_name().context("plugin file name")?;
        std::fs::copy(&plugin, context.join("plugins").join(name))?;
    }
    run_command(
        podman()?
            // The docker format keeps HEALTHCHECK (OCI has no such field).
            .args(["build", "--format", "docker", "--network", "host"])
            .args(["--target", "local"])
            .args(["--build-arg", &format!("BASE={BASE}")])
            .args(["--tag", IMAGE, "--file"])
            .arg(root().join("Dockerfile"))
            .arg(&context),
    )?;
    let size = podman()?
        .args(["image", "inspect", "--format", "{{.Size}}", IMAGE])
        .output()?;
    let bytes: u64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "xtask: built {IMAGE}: {:.1} MB (eddy {:.1} MB)",
        bytes as f64 / 1e6,
        std::fs::metadata(&eddy)?.len() as f64 / 1e6
    );
    Ok(())
}

/// podman-compose from PyPI in a virtual environment of its own (Debian's
/// 1.0.3 puts a host-network service on a second network, and reads
/// `.env` over the environment), installed once.
pub fn podman_compose() -> anyhow::Result<PathBuf> {
    let venv = dir().join("venv");
    let bin = venv.join("bin/podman-compose");
    if bin.is_file() {
        return Ok(bin);
    }
    run_command(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run_command(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "podman-compose==1.6.0",
    ]))?;
    Ok(bin)
}

/// Makes the base image once: a minimal Debian bookworm from its packages.
fn ensure_base() -> anyhow::Result<()> {
    let exists = podman()?.args(["image", "exists", BASE]).status()?;
    if exists.success() {
        return Ok(());
    }
    let tarball = dir().join("base-essential.tar");
    if !tarball.is_file() {
        println!("xtask: making the base image with mmdebstrap (about 30 s, once)");
        // mmdebstrap picks its output's format by the name's extension.
        let partial = dir().join("base-essential.partial.tar");
        for stale in [&tarball, &partial] {
            if stale.is_dir() {
                std::fs::remove_dir_all(stale)?;
            }
        }
        let mut mmdebstrap = Command::new("mmdebstrap");
        mmdebstrap
            .args(["--variant=essential", "--quiet"])
            .arg(format!("--include={BASE_PACKAGES}"));
        for exclude in BASE_EXCLUDES {
            mmdebstrap.arg(format!("--dpkgopt={exclude}"));
        }
        run_command(mmdebstrap.arg("bookworm").arg(&partial))?;
        std::fs::rename(&partial, &tarball)?;
    }
    run_command(podman()?.arg("import").arg(&tarball).arg(BASE))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}
