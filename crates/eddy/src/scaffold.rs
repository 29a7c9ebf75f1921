//! `eddy new <name>`: a plugin crate that builds to wasm32-wasip2 and passes
//! its test as generated.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the SDK was when this `eddy` was built; `--sdk` overrides it.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
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
        ("tests/events.jsonl", EVENTS_JSONL),
        ("tests/expected.jsonl", EXPECTED_JSONL),
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
- Test the built `.wasm` in eddy's own sandbox, no Kafka needed (`tests/events.jsonl` holds the
  events, `tests/expected.jsonl` what eddy would send for them):

  ```sh
  cargo build --target wasm32-wasip2 --release && eddy test target/wasm32-wasip2/release/{crate_name}.wasm --name {name} --events tests/events.jsonl --expect tests/expected.jsonl
  ```

  Add `--config eddy.toml` to route, limit and allow-list as your deployment does; `--update`
  accepts what the plugin does now.
- Deploy: copy `target/wasm32-wasip2/release/{crate_name}.wasm` to eddy's plugin folder as
  `{name}.wasm`, route events to `{name}` in `eddy.toml` and allow its topic:
  `[plugin.{name}] publish_to = ["{name}.out"]`.
"#;

/// Events for `eddy test`: one the handler answers, one it rejects.
const EVENTS_JSONL: &str = r#"{"event_id": "0192f0c4-0000-7000-8000-000000000001", "event_type": "thing.happened", "timestamp": "2026-11-30T09:00:00Z", "service_name": "tests", "version": "1.0", "data": {"id": "42"}}
{"event_id": "0192f0c4-0000-7000-8000-000000000002", "event_type": "thing.happened", "timestamp": "2026-11-30T09:01:00Z", "service_name": "tests", "version": "1.0", "data": {}}
"#;

/// What `eddy test` prints for [`EVENTS_JSONL`]; the follow-up's id, time
/// and plugin version are compared by shape.
const EXPECTED_JSONL: &str = r#"{"effect":"follow-up","line":1,"topic":"{name}.out","key":"42","headers":{"content-type":"application/json","eddy-hops":"1","eddy-plugin":"{name}","eddy-plugin-version":"d409f865cb37","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},"value":{"causation_id":"0192f0c4-0000-7000-8000-000000000001","correlation_id":"0192f0c4-0000-7000-8000-000000000001","data":{"id":"42","source_event":"thing.happened"},"event_id":"01a22d60-8de5-76bf-98aa-61060cb6098d","event_type":"{name}.handled","metadata":{},"service_name":"{name}","timestamp":"2026-11-30T16:53:52.229017084Z","version":"1.0"}}
{"effect":"dead-letter","line":2,"topic":"events.dlq","key":null,"headers":{"eddy-attempts":"1","eddy-error":"reject: data of thing.happened 0192f0c4-0000-7000-8000-000000000002 does not have the expected shape: missing field `id` at line 1 column 2","eddy-original-offset":"1","eddy-original-partition":"0","eddy-original-topic":"events","eddy-plugin":"{name}","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},"value":{"data":{},"event_id":"0192f0c4-0000-7000-8000-000000000002","event_type":"thing.happened","service_name":"tests","timestamp":"2026-11-30T09:01:00Z","version":"1.0"}}
"#;
