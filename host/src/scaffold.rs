//! `eddy new <name>`: a plugin crate that builds to wasm32-wasip2 and passes
//! its test as generated.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the SDK was when this `eddy` was built; `--sdk` overrides it.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Writes the plugin crate `name` into `dir/name`. Fails if it exists.
pub fn new_plugin(dir: &Path, name: &str, sdk: &Path) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{name:?} is not a usable plugin name: use lower-case letters, digits, '-' and '_', \
             starting with a letter (it becomes the crate and the .wasm file name)"
        );
    }
    let sdk = std::fs::canonicalize(sdk).with_context(|| {
        format!(
            "the eddy SDK is not at {}; pass --sdk <path to eddy's sdk folder>",
            sdk.display()
        )
    })?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; pick another name or folder",
            root.display()
        );
    }
    let crate_name = name.replace('-', "_");
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let files = [
        ("Cargo.toml", CARGO_TOML),
        ("src/lib.rs", LIB_RS),
        ("README.md", README_MD),
        (".gitignore", "target/\n"),
    ];
    for (file, template) in files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
        let text = template
            .replace("{name}", name)
            .replace("{crate_name}", &crate_name)
            .replace("{sdk}", &sdk_path);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
eddy-sdk = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }

[profile.release]
strip = "debuginfo"

# A crate of its own, even when created inside another workspace.
[workspace]
"#;

const LIB_RS: &str = r#"//! The {name} eddy plugin.

use eddy_sdk::{Event, HandlerError};
use serde::Deserialize;

/// What this plugin expects in `data`; unknown fields are ignored.
#[derive(Deserialize)]
struct Payload {
    id: String,
}

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    let payload: Payload = event.data()?;
    eddy_sdk::log::info(format!("{name} got {} for {}", event.event_type, payload.id));
    let topic = eddy_sdk::config("out_topic").unwrap_or_else(|| "{name}.out".to_string());
    let reply = Event::integration("{name}.handled")
        .with_json(eddy_sdk::json!({ "id": payload.id, "source_event": event.event_type }));
    eddy_sdk::publish(&topic, Some(&payload.id), &reply)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::{json, testing};

    #[test]
    fn answers_each_event() {
        let event = Event::new("thing.happened").with_json(json!({ "id": "42" }));
        handle(event).unwrap();

        let published = testing::published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].topic, "{name}.out");
        assert_eq!(published[0].key.as_deref(), Some("42"));
        assert_eq!(published[0].event.event_type, "{name}.handled");
    }

    #[test]
    fn a_payload_without_id_is_rejected() {
        let event = Event::new("thing.happened").with_json(json!({}));
        assert!(matches!(handle(event), Err(HandlerError::Reject(_))));
    }
}
"#;

const README_MD: &str = r#"# {name}

An eddy plugin.

- Test: `cargo test`
- Build: `cargo build --target wasm32-wasip2 --release` (once: `rustup target add wasm32-wasip2`)
- Deploy: copy `target/wasm32-wasip2/release/{crate_name}.wasm` to eddy's plugin folder as
  `{name}.wasm`, route events to `{name}` in `eddy.toml` and allow its topic:
  `[plugin.{name}] publish_to = ["{name}.out"]`.
"#;
