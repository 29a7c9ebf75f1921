//! The container files, checked without a broker: the compose file and the
//! Dockerfile have the structure the README promises.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_compose_file_has_kafka_kraft_kafka_ui_and_eddy() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("docker-compose.kafka.yml")).expect("valid YAML");
    let services = &compose["services"];
    let kafka = &services["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("apache/kafka:"))
    );
    let service_map = services.as_mapping().expect("services");
    for (name, service) in service_map {
        let text = format!("{name:?} {:?}", service["image"]).to_lowercase();
        assert!(
            !text.contains("zookeeper"),
            "KRaft needs no ZooKeeper: {text}"
        );
    }
    assert!(kafka["environment"]["KAFKA_ZOOKEEPER_CONNECT"].is_null());
    let env = &kafka["environment"];
    assert_eq!(
        env["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    let listeners = env["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .expect("advertised listeners");
    assert!(
        listeners.contains("localhost:9092") && listeners.contains("kafka:29092"),
        "{listeners}"
    );
    assert!(ports(kafka).contains(&"9092:9092".to_string()));

    let ui = &services["kafka-ui"];
    assert!(
        ui["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("kafbat/kafka-ui"))
    );
    assert!(ports(ui).contains(&"8080:8080".to_string()));
    assert_eq!(
        ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"].as_str(),
        Some("kafka:29092")
    );

    let registry = &services["registry"];
    assert!(
        registry["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("apicurio/apicurio-registry:"))
    );
    assert!(ports(registry).contains(&"8081:8080".to_string()));

    let eddy = &services["eddy"];
    assert!(eddy["build"].as_str().is_some());
    assert!(ports(eddy).contains(&"9464:9464".to_string()));
    // Traces go to Jaeger all-in-one's OTLP/HTTP port; its UI is published.
    let jaeger = &services["jaeger"];
    assert!(ports(jaeger).contains(&"16686:16686".to_string()));
    assert_eq!(
        jaeger["environment"]["COLLECTOR_OTLP_ENABLED"].as_str(),
        Some("true")
    );
    assert_eq!(
        eddy["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
        Some("http://jaeger:4318")
    );
    let volumes: Vec<&str> = eddy["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.iter().any(|v| v.contains(":/plugins")),
        "{volumes:?}"
    );
    let config_mount = volumes
        .iter()
        .find(|v| v.contains(":/config/eddy.toml"))
        .expect("config mount");
    let config_path = config_mount
        .split(':')
        .next()
        .unwrap_or_default()
        .trim_start_matches("./");
    let config =
        eddy_core::Config::parse(&repo_file(config_path)).expect("the mounted config parses");
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    assert_eq!(eddy["env_file"].as_str(), Some(".env"));

    let dotenv = repo_file(".env");
    for var in [
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CONSUMER_GROUP",
        "KAFKA_AUTO_OFFSET_RESET",
    ] {
        assert!(
            dotenv.lines().any(|l| l.starts_with(&format!("{var}="))),
            ".env sets {var}"
        );
        assert_eq!(
            eddy["environment"][var].as_str(),
            Some(format!("${{{var}}}").as_str())
        );
    }
    // The topics the examples use are created.
    let init = serde_yaml::to_string(&services["kafka-init"]).expect("kafka-init");
    for topic in [
        "user.events",
        "order.events",
        "notification.commands",
        "order.alerts",
    ] {
        assert!(init.contains(topic), "kafka-init creates {topic}");
    }
}

fn ports(service: &serde_yaml::Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|p| {
            p.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_dockerfile_builds_in_a_registry_or_from_binaries_built_here_as_a_non_root_user() {
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let text = repo_file("Dockerfile");
    // Join continuation lines, drop comments: one instruction per entry.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        pending.push_str(trimmed.trim_end_matches('\\'));
        pending.push(' ');
        if !trimmed.ends_with('\\') {
            let (keyword, rest) = pending
                .trim()
                .split_once(' ')
                .expect("instruction with arguments");
            instructions.push((keyword.to_string(), rest.to_string()));
            pending.clear();
        }
    }
    assert!(pending.is_empty(), "a continuation line ends the file");
    for (keyword, _) in &instructions {
        assert!(
            KNOWN.contains(&keyword.as_str()),
            "unknown instruction {keyword}"
        );
        assert_eq!(keyword, &keyword.to_uppercase());
    }
    // Stages by name; the last is what a plain `docker build` makes.
    let stages: Vec<(&str, &str)> = instructions
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a.split_once(" AS ").expect("every stage is named"))
        .collect();
    let names: Vec<&str> = stages.iter().map(|(_, name)| *name).collect();
    assert_eq!(names, ["build", "base", "local", "runtime"]);
    assert_eq!(stages[1].0, "${BASE}", "the base image is a build argument");
    assert_eq!(stages[2].0, "base");
    assert_eq!(stages[3].0, "base");
    assert!(
        instructions
            .iter()
            .any(|(k, a)| k == "ARG" && a.starts_with("BASE=debian:")),
        "a default base a registry serves"
    );
    let stage = |name: &str| -> Vec<(String, String)> {
        let start = instructions
            .iter()
            .position(|(k, a)| k == "FROM" && a.ends_with(&format!(" AS {name}")))
            .expect("stage");
        instructions[start + 1..]
            .iter()
            .take_while(|(k, _)| k != "FROM")
            .cloned()
            .collect()
    };
    let runtime = stage("runtime");
    assert!(
        runtime
            .iter()
            .any(|(k, a)| k == "COPY" && a.contains("--from=build") && a.contains("eddy"))
    );
    for name in ["local", "runtime"] {
        let user = stage(name)
            .into_iter()
            .find(|(k, _)| k == "USER")
            .map(|(_, a)| a)
            .expect("the stage sets USER");
        assert_eq!(user, "10001:10001", "{name}");
    }
    // What the image runs with is checked on the image itself, built and
    // run by the container tests (tests/e2e/container.rs).
}

/// The objects `kubectl kustomize deploy/k8s/<overlay>` renders.
fn kustomize(overlay: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rendered = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join("deploy/k8s").join(overlay))
        .output()
        .expect("kubectl (its kustomize needs no cluster)");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8(rendered.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("YAML"))
        .collect()
}

fn object<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_kubernetes_objects_agree_with_the_config_and_the_image() {
    for overlay in ["base", "keda"] {
        let objects = kustomize(overlay);
        let config_map = object(&objects, "ConfigMap");
        let config = eddy_core::Config::parse(
            config_map["data"]["eddy.toml"]
                .as_str()
                .expect("eddy.toml in the ConfigMap"),
        )
        .expect("the config parses");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let port: u64 = config
            .http
            .listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");

        let deployment = object(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert!(pod["terminationGracePeriodSeconds"].as_u64() >= Some(30));
        // The image's user (Dockerfile: USER 10001:10001).
        assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(10001));
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let eddy = &pod["containers"][0];
        assert_eq!(
            eddy["args"],
            serde_yaml::from_str::<serde_yaml::Value>("[run, --config, /config/eddy.toml]")
                .expect("args")
        );
        assert_eq!(eddy["ports"][0]["containerPort"].as_u64(), Some(port));
        assert_eq!(eddy["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(eddy["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(
            eddy["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        let mounts = eddy["volumeMounts"].as_sequence().expect("mounts");
        let mounted_at = |name: &str| {
            mounts
                .iter()
                .find(|m| m["name"].as_str() == Some(name))
                .and_then(|m| m["mountPath"].as_str())
                .map(str::to_string)
        };
        assert_eq!(mounted_at("config").as_deref(), Some("/config"));
        assert_eq!(
            mounted_at("plugins").map(std::path::PathBuf::from),
            Some(config.plugins.dir.clone())
        );
        let volumes = pod["volumes"].as_sequence().expect("volumes");
        assert!(volumes.iter().any(|v| {
            v["name"].as_str() == Some("config")
                && v["configMap"]["name"] == config_map["metadata"]["name"]
        }));
        // The root filesystem is read-only: the compiled-plugin cache
        // (under XDG_CACHE_HOME=/var/cache in the image) gets a volume.
        assert_eq!(mounted_at("compiled").as_deref(), Some("/var/cache/eddy"));
        assert!(
            volumes
                .iter()
                .any(|v| v["name"].as_str() == Some("compiled") && !v["emptyDir"].is_null())
        );
        let env = |name: &str| {
            eddy["env"]
                .as_sequence()
                .and_then(|e| e.iter().find(|v| v["name"].as_str() == Some(name)))
                .and_then(|v| v["value"].as_str())
                .map(str::to_string)
        };
        let group = env("KAFKA_CONSUMER_GROUP").unwrap_or(config.kafka.group_id.clone());
        let service = object(&objects, "Service");
        assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(port));
        assert!(object(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"].is_number());

        if overlay == "keda" {
            let scaled = object(&objects, "ScaledObject");
            assert_eq!(
                scaled["spec"]["scaleTargetRef"]["name"],
                deployment["metadata"]["name"]
            );
            // No more consumers than the topics have partitions (3 each).
            let max = scaled["spec"]["maxReplicaCount"].as_u64().expect("max");
            assert!((1..=3).contains(&max), "maxReplicaCount {max}");
            let triggers = scaled["spec"]["triggers"].as_sequence().expect("triggers");
            let mut topics: Vec<String> = triggers
                .iter()
                .map(|t| {
                    assert_eq!(t["type"], "kafka");
                    assert_eq!(
                        t["metadata"]["consumerGroup"].as_str(),
                        Some(group.as_str())
                    );
                    t["metadata"]["topic"].as_str().expect("topic").to_string()
                })
                .collect();
            topics.sort();
            let mut routed = config.topics();
            routed.sort();
            assert_eq!(topics, routed, "a trigger per topic eddy reads");
        }
    }
}
