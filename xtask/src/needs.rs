//! What `cargo xtask test` needs from the machine beyond Rust: checked
//! before anything is built, installed with apt where xtask runs as root,
//! else named with the one command that installs it.

use std::process::{Command, Stdio};

use anyhow::bail;

use crate::run_command;

/// A Debian package and how to tell it is there.
struct Need {
    package: &'static str,
    why: &'static str,
    present: fn() -> bool,
}

fn has(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const NEEDS: &[Need] = &[
    Need {
        package: "openjdk-17-jre-headless",
        why: "the Kafka broker and the schema registry",
        present: || has("java"),
    },
    Need {
        package: "maven",
        why: "fetching the broker's and the registry's jars",
        present: || has("mvn"),
    },
    Need {
        package: "podman",
        why: "the container image and its tests",
        present: || has("podman"),
    },
    Need {
        package: "runc",
        why: "running the container image",
        present: || has("runc"),
    },
    Need {
        package: "mmdebstrap",
        why: "the image's Debian base",
        present: || has("mmdebstrap"),
    },
    Need {
        package: "python3-venv",
        why: "the Python clients the tests read eddy's output with",
        present: || {
            Command::new("python3")
                .args(["-c", "import ensurepip"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    },
    Need {
        package: "gdb",
        why: "the stacks a test prints when it finds eddy stuck",
        present: || has("gdb"),
    },
    Need {
        package: "openssl",
        why: "the broker's TLS certificates",
        present: || has("openssl"),
    },
];

/// Installs (as root, with apt) or names what the tests need and the
/// machine lacks.
pub fn ensure() -> anyhow::Result<()> {
    let missing: Vec<&Need> = NEEDS.iter().filter(|need| !(need.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|need| need.package).collect();
    for need in &missing {
        println!("xtask: the tests need {} ({})", need.package, need.why);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root && has("apt-get") {
        println!("xtask: installing {} with apt-get", packages.join(" "));
        run_command(Command::new("apt-get").arg("update"))?;
        run_command(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        let still: Vec<&str> = NEEDS
            .iter()
            .filter(|need| !(need.present)())
            .map(|need| need.package)
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    bail!(
        "install them first, then run `cargo xtask test` again:\n\n    sudo apt-get install -y {}\n",
        packages.join(" ")
    )
}
