//! eddy's image (`cargo xtask image`, set as `EDDY_IMAGE`), run with podman
//! on the host's network against the local broker: events in, follow-ups
//! out, a plugin hot-reloaded in the mounted folder, a graceful stop, the
//! health check, a read-only root, unreadable volumes, and the compose
//! file's eddy service.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Record, bootstrap, create_topics, env_path, producer, read, read_to_end, unique,
};

/// The image's health check asks 127.0.0.1:9464, so a container test's
/// eddy listens there; one at a time.
static PORT_9464: Mutex<()> = Mutex::new(());

fn image() -> String {
    std::env::var("EDDY_IMAGE")
        .expect("EDDY_IMAGE is not set: run the tests with `cargo xtask test`")
}

/// `podman ARGS` (with the `CONTAINERS_CONF` cargo xtask test sets).
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("run podman")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A container by name, removed when the test ends however it ends.
struct Container(String);

impl Container {
    fn logs(&self) -> String {
        text(&podman(&["logs", &self.0]))
    }

    fn wait_for_log(&self, needle: &str, count: usize) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A folder with `config/eddy.toml` and `plugins/tagger.wasm`, readable by
/// anyone (the container runs as uid 10001).
fn volumes(topic: &str, out: &str, group: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("eddy-container"));
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    std::fs::write(
        dir.join("config/eddy.toml"),
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\n\n\
             [plugins]\ndir = \"/plugins\"\n\n[http]\nlisten = \"127.0.0.1:9464\"\n\n\
             [[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
             [plugin.tagger]\npublish_to = [\"{out}\"]\nconfig = {{ out_topic = \"{out}\" }}\n",
            bootstrap()
        ),
    )
    .expect("config");
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger.wasm"),
        dir.join("plugins/tagger.wasm"),
    )
    .expect("plugin");
    for path in [dir.clone(), dir.join("config"), dir.join("plugins")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn mount(dir: &Path, inside: &str) -> String {
    format!("{}:{inside}:ro", dir.display())
}

fn send(topic: &str, seqs: std::ops::Range<u64>) {
    let producer = producer();
    for n in seqs {
        let event = json!({"event_id": format!("{topic}-{n}"), "event_type": "load.steady",
                           "data": {"seq": n}});
        producer.send_json(topic, &format!("k{}", n % 8), &event);
    }
    producer.flush();
}

fn tags(records: &[Record]) -> Vec<(u64, String)> {
    let mut tags: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            let data = &r.json()["data"];
            (
                data["seq"].as_u64().expect("seq"),
                data["tag"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    tags.sort();
    tags
}

/// Whether an eddy on 127.0.0.1:9464 says it is ready.
fn ready() -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect("127.0.0.1:9464") else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let asked =
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: eddy\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    asked.is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// Waits, at most a minute, until eddy in the container is ready.
fn wait_ready() -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn the_image_is_small_non_root_and_says_how_to_check_and_stop_it() {
    let output = podman(&["image", "inspect", &image()]);
    assert!(output.status.success(), "{}", text(&output));
    let inspected: Value = serde_json::from_slice(&output.stdout).expect("inspect JSON");
    let image = &inspected[0];
    let config = &image["Config"];
    assert_eq!(config["User"], "10001:10001");
    assert_eq!(config["StopSignal"], "SIGTERM");
    let health = image["Healthcheck"]["Test"].to_string();
    assert!(health.contains("\"eddy\",\"health\""), "{health}");
    assert!(config["ExposedPorts"]["9464/tcp"].is_object(), "{config}");
    for volume in ["/plugins", "/config"] {
        assert!(config["Volumes"][volume].is_object(), "{config}");
    }
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "eddy");
    assert_eq!(config["Entrypoint"], json!(["eddy"]));
    let size = image["Size"].as_u64().expect("size");
    println!("image {}: {:.1} MB", self::image(), size as f64 / 1e6);
    assert!(size < 200_000_000, "the image is {size} bytes");
}

#[test]
fn the_container_handles_events_reloads_plugins_stops_gracefully_and_writes_nothing() {
    let _port = PORT_9464.lock().unwrap_or_else(|e| e.into_inner());
    let (topic, out, group) = (unique("ctr"), unique("ctr.out"), unique("g"));
    create_topics(&[&topic, &out], 3);
    let dir = volumes(&topic, &out, &group);
    let name = unique("eddy-ctr");
    let run = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        // No tmpfs either (podman adds /tmp, /var/tmp and /run by default):
        // eddy writes nothing.
        "--read-only",
        "--read-only-tmpfs=false",
        "--volume",
        &mount(&dir.join("config"), "/config"),
        "--volume",
        &mount(&dir.join("plugins"), "/plugins"),
        &image(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let container = Container(name.clone());
    assert!(wait_ready(), "{}", container.logs());

    send(&topic, 0..100);
    let first = read(&[&out], 100, Duration::from_secs(60), |_| true);
    assert_eq!(first.len(), 100, "{}", container.logs());
    assert!(tags(&first).iter().all(|(_, tag)| tag == "v1"));

    // A new version lands in the mounted folder, as a deploy tool writes it.
    let landing = dir.join("plugins/.tagger.wasm.partial");
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger-v2.wasm"),
        &landing,
    )
    .expect("copy v2");
    std::fs::rename(&landing, dir.join("plugins/tagger.wasm")).expect("land v2");
    assert!(
        container.wait_for_log("plugin reloaded", 1),
        "{}",
        container.logs()
    );
    send(&topic, 100..200);
    let both = read(&[&out], 200, Duration::from_secs(60), |_| true);
    let v2: Vec<u64> = tags(&both)
        .into_iter()
        .filter(|(_, tag)| tag == "v2")
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(v2, (100..200).collect::<Vec<_>>(), "{}", container.logs());

    let health = podman(&["healthcheck", "run", &name]);
    assert!(health.status.success(), "{}", text(&health));
    let uid = podman(&["exec", &name, "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "10001");
    for place in ["/tmp", "/plugins", "/config", "/usr/local/bin", "/"] {
        let probe = format!("{}/probe", place.trim_end_matches('/'));
        let wrote = podman(&["exec", &name, "/bin/sh", "-c", &format!("echo x > {probe}")]);
        assert!(!wrote.status.success(), "wrote {probe}");
        let said = text(&wrote);
        assert!(
            said.contains("Read-only file system") || said.contains("Permission denied"),
            "{probe}: {said}"
        );
    }

    // A graceful stop, then a restart that handles nothing again.
    let stopped = podman(&["stop", "--time", "30", &name]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(
        String::from_utf8_lossy(&code.stdout).trim(),
        "0",
        "{}",
        container.logs()
    );
    assert!(container.logs().contains("stopped"), "{}", container.logs());
    let started = podman(&["start", &name]);
    assert!(started.status.success(), "{}", text(&started));
    assert!(wait_ready(), "{}", container.logs());
    send(&topic, 200..201);
    let after = read(&[&out], 201, Duration::from_secs(60), |_| true);
    let seqs: Vec<u64> = tags(&after).into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        (0..201).collect::<Vec<_>>(),
        "each event once: {}",
        container.logs()
    );
    drop(container);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_volume_the_container_cannot_read_is_named_with_the_uid() {
    let dir = volumes("t", "t.out", "g");
    let config = dir.join("config/eddy.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config_mount = mount(&dir.join("config"), "/config");
    let plugins_mount = mount(&dir.join("plugins"), "/plugins");
    let run_once = || {
        podman(&[
            "run",
            "--rm",
            "--network",
            "host",
            "--volume",
            &config_mount,
            "--volume",
            &plugins_mount,
            &image(),
        ])
    };
    let unreadable_config = run_once();
    assert!(!unreadable_config.status.success());
    let said = text(&unreadable_config);
    assert!(
        said.contains("cannot read config file /config/eddy.toml: Permission denied")
            && said.contains("eddy runs as uid 10001"),
        "{said}"
    );

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(dir.join("plugins"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let unreadable_plugins = run_once();
    assert!(!unreadable_plugins.status.success());
    let said = text(&unreadable_plugins);
    assert!(
        (said.contains("cannot read the plugin folder /plugins: Permission denied")
            || said.contains("cannot watch /plugins: Permission denied"))
            && said.contains("eddy runs as uid 10001"),
        "{said}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_compose_files_eddy_service_runs_against_the_broker() {
    let _port = PORT_9464.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let group = unique("compose");
    let compose = |args: &[&str]| {
        Command::new(env_path("EDDY_PODMAN_COMPOSE"))
            .current_dir(&root)
            .args([
                "-f",
                "docker-compose.kafka.yml",
                "-f",
                "docker-compose.local.yml",
            ])
            .args(args)
            .env("KAFKA_CONSUMER_GROUP", &group)
            .output()
            .expect("run podman-compose")
    };
    struct Down<F: Fn(&[&str]) -> Output>(F);
    impl<F: Fn(&[&str]) -> Output> Drop for Down<F> {
        fn drop(&mut self) {
            (self.0)(&["down", "--timeout", "30"]);
        }
    }
    // The topics the compose file's eddy reads and writes; kafka-init makes
    // them where compose runs the broker too.
    create_topics(
        &[
            "user.events",
            "order.events",
            "notification.commands",
            "order.alerts",
        ],
        3,
    );
    let up = compose(&["up", "--detach", "--no-deps", "--no-build", "eddy"]);
    assert!(up.status.success(), "{}", text(&up));
    let _down = Down(compose);
    if !wait_ready() {
        let log = text(&podman(&["logs", "eddy_eddy_1"]));
        panic!("eddy never became ready; its log:\n{log}");
    }
    let id = unique("compose-user");
    let event = json!({"event_id": id, "event_type": "user.created", "timestamp": "2026-11-30T09:00:00Z",
                       "service_name": "user-service", "version": "1.0",
                       "data": {"user_id": id, "email": "c@example.com", "name": "Compose"}});
    let producer = producer();
    producer.send_json("user.events", &id, &event);
    producer.flush();
    let answered = read(
        &["notification.commands"],
        1,
        Duration::from_secs(60),
        |r| r.json()["causation_id"] == id,
    );
    assert_eq!(answered.len(), 1);
    let all = read_to_end(&["notification.commands"], |r| {
        r.json()["causation_id"] == id
    });
    assert_eq!(all.len(), 1, "answered once");
}
