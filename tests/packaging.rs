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

    let eddy = &services["eddy"];
    assert!(eddy["build"].as_str().is_some());
    assert!(ports(eddy).contains(&"9464:9464".to_string()));
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
        eddy_host::Config::parse(&repo_file(config_path)).expect("the mounted config parses");
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
fn the_dockerfile_is_multi_stage_non_root_and_checks_health_without_curl() {
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
    assert_eq!(instructions[0].0, "FROM");
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let last_stage = &instructions[*stages.last().expect("a stage")..];
    let find = |k: &str| {
        last_stage
            .iter()
            .find(|(kw, _)| kw == k)
            .map(|(_, a)| a.clone())
    };
    let user = find("USER").expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    let health = find("HEALTHCHECK").expect("HEALTHCHECK");
    assert!(
        health.contains("eddy") && health.contains("health") && !health.contains("curl"),
        "{health}"
    );
    assert!(find("EXPOSE").is_some_and(|p| p.contains("9464")));
    let volumes = find("VOLUME").expect("VOLUME");
    assert!(
        volumes.contains("/plugins") && volumes.contains("/config"),
        "{volumes}"
    );
    assert!(
        last_stage
            .iter()
            .any(|(k, a)| k == "COPY" && a.contains("--from=") && a.contains("eddy"))
    );
}
