//! What real clusters send and need: records compressed with every codec
//! Kafka has, follow-ups eddy compresses itself, and TLS and SASL (a broker
//! of the test's own, with certificates made by `openssl` and SCRAM users
//! made when it is formatted).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::failures::tagger_config;
use crate::harness::{
    Eddy, Listener, PluginFile, TestBroker, bootstrap, create_topics, env_path, http_get,
    producer_with, read_from, read_to_end, seed_event, unique,
};

const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
const PER_CODEC: usize = 200;

#[test]
fn records_compressed_with_every_codec_are_handled_and_follow_ups_compressed() {
    let (topic, out, group) = (unique("codecs"), unique("codecs.out"), unique("g"));
    create_topics(&[&topic, &out], 2);
    // eddy's own producer compresses its follow-ups with zstd.
    let config = tagger_config(&group, &topic, &out).replace(
        "[plugins]\n",
        "[kafka.producer]\n\"compression.type\" = \"zstd\"\n\n[plugins]\n",
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let mut sent = HashSet::new();
    for codec in CODECS {
        // Batches of repetitive JSON, which each codec does shrink: a codec
        // eddy could not read would hold its partition at the first.
        let producer = producer_with(
            &bootstrap(),
            &[("compression.type", codec), ("linger.ms", "50")],
        );
        for n in 0..PER_CODEC {
            let id = format!("{codec}-{n}");
            let key = format!("key-{}", n % 8);
            let data = json!({"seq": n, "codec": codec, "filler": "abcdefgh".repeat(20)});
            producer.send_json(&topic, &key, &seed_event(&id, "codec.event", &key, data));
            sent.insert(id);
        }
        producer.flush();
    }
    let answers = crate::harness::follow_ups_of(
        &[&out],
        &sent.iter().cloned().collect::<Vec<_>>(),
        sent.len(),
    );
    let answered: HashSet<String> = answers
        .iter()
        .map(|a| a.json()["causation_id"].as_str().unwrap_or("").to_string())
        .collect();
    let missing: Vec<&String> = sent.difference(&answered).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events were not answered, e.g. {:?}; log:\n{}",
        missing.len(),
        sent.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        eddy.log()
    );
    // Read back to the high-water mark: each event answered once, and
    // nothing else there.
    let all = read_to_end(&[&out], |_| true);
    assert_eq!(all.len(), sent.len(), "log:\n{}", eddy.log());
    let log = eddy.log();
    assert!(!log.contains("Decompression"), "log:\n{log}");
    // What the broker stored: the input in every codec, eddy's follow-ups
    // in zstd.
    let input: HashSet<&str> = codecs_on_disk(&topic, 2).into_iter().collect();
    assert_eq!(
        input,
        HashSet::from(CODECS),
        "the codecs of {topic}'s batches"
    );
    let output = codecs_on_disk(&out, 2);
    assert_eq!(
        output,
        vec!["zstd"],
        "the codecs of the follow-ups' batches"
    );
    assert!(eddy.is_running());
    eddy.stop();
}

/// The compression codecs of the record batches the local broker stored
/// for `topic`, read from its log segments: a batch (format v2) is its base
/// offset (8 bytes), its length (4), then 4 + 1 + 4 bytes of epoch, magic
/// and CRC, then 2 bytes of attributes whose low 3 bits name the codec.
fn codecs_on_disk(topic: &str, partitions: i32) -> Vec<&'static str> {
    let data = env_path("EDDY_KAFKA_HOME").join("data");
    let mut codecs = Vec::new();
    for partition in 0..partitions {
        let dir = data.join(format!("{topic}-{partition}"));
        for entry in std::fs::read_dir(&dir).expect("the partition's folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("log segment");
            let mut at = 0;
            while at + 23 <= bytes.len() {
                let length = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
                let attributes = u16::from_be_bytes(bytes[at + 21..at + 23].try_into().unwrap());
                let codec = match attributes & 0x7 {
                    0 => "none",
                    1 => "gzip",
                    2 => "snappy",
                    3 => "lz4",
                    4 => "zstd",
                    _ => "unknown",
                };
                // Control batches (transaction markers) are never compressed.
                if attributes & 0x20 == 0 && !codecs.contains(&codec) {
                    codecs.push(codec);
                }
                at += 12 + length as usize;
            }
        }
    }
    codecs
}

const SCRAM_PASSWORD: &str = "scram-pass-0c6f";
const PLAIN_PASSWORD: &str = "api-secret-9d2e";

/// Certificates made with `openssl` for one test broker: a CA, the
/// broker's certificate (for 127.0.0.1) and key in one PEM keystore, a
/// client certificate for mutual TLS, and a second CA nobody uses.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ca = |name: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])
        };
        ca("ca");
        ca("other-ca");
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("san.ext");
        for (name, extensions, days) in [
            ("broker", true, "2"),
            ("client", false, "2"),
            // Its validity ended yesterday.
            ("expired-client", false, "-1"),
        ] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            let mut sign = vec![
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                days,
                "-out",
                &format!("{name}.pem"),
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
            if extensions {
                sign.extend(["-extfile".to_string(), "san.ext".to_string()]);
            }
            openssl(&sign.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let keystore = [
            std::fs::read_to_string(dir.join("broker.key")).expect("key"),
            std::fs::read_to_string(dir.join("broker.pem")).expect("cert"),
        ]
        .concat();
        std::fs::write(dir.join("broker-keystore.pem"), keystore).expect("keystore");
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// A broker with SASL_SSL (SCRAM-SHA-512 user `eddy`, PLAIN user `apikey`)
/// and mutual-TLS listeners besides PLAINTEXT, which the test itself uses.
fn secure_broker() -> (TestBroker, Pki, Listener, Listener) {
    let dir = std::env::temp_dir().join(unique("eddy-secure-broker"));
    std::fs::create_dir_all(&dir).expect("dir");
    let pki = Pki::make(&dir);
    let (sasl, mtls) = (Listener::new("SASL_SSL"), Listener::new("SSL"));
    let properties = format!(
        "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n\
         listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
         listener.name.sasl_ssl.plain.sasl.jaas.config=\
         org.apache.kafka.common.security.plain.PlainLoginModule required \
         user_apikey=\"{PLAIN_PASSWORD}\";\n\
         listener.name.ssl.ssl.client.auth=required\n\
         ssl.keystore.type=PEM\nssl.keystore.location={}\n\
         ssl.truststore.type=PEM\nssl.truststore.location={}\n",
        pki.path("broker-keystore.pem"),
        pki.path("ca.pem")
    );
    let scram = format!("SCRAM-SHA-512=[name=eddy,password={SCRAM_PASSWORD}]");
    let broker = TestBroker::start_in(dir, &[&sasl, &mtls], &properties, &["--add-scram", &scram]);
    (broker, pki, sasl, mtls)
}

/// One eddy against `listener` with `security` (a `[kafka.security]`
/// table's body) and `env`: ten events in through the plain listener, one
/// of them failing for good. Whether nine answers and one dead letter came
/// out; the test's `Eddy` is handed back to look at.
fn round_trip(
    plain: &str,
    listener: &str,
    security: &str,
    env: &[(&str, &str)],
    expect_handled: bool,
) -> Eddy {
    let (topic, out, group) = (unique("secure"), unique("secure.out"), unique("g"));
    crate::harness::create_topics_on(plain, &[&topic, &out], 1);
    let config = format!(
        "{}\n[kafka.security]\n{security}",
        tagger_config(&group, &topic, &out)
            .replace("[plugin.tagger]\n", "[plugin.tagger]\nmax_retries = 0\n")
    );
    let mut env = env.to_vec();
    env.push(("KAFKA_BOOTSTRAP_SERVERS", listener));
    let eddy = Eddy::start_with_env(&config, &[PluginFile::Test("tagger")], &env);
    let producer = crate::harness::producer_for(plain);
    let ids: Vec<String> = (0..10).map(|n| format!("{topic}-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let data = if n == 3 {
            json!({"seq": n, "fail_attempts": 99})
        } else {
            json!({"seq": n})
        };
        producer.send_json(&topic, "k", &seed_event(id, "secure.event", "k", data));
    }
    producer.flush();
    if !expect_handled {
        return eddy;
    }
    let limit = Duration::from_secs(60);
    let answers = read_from(plain, &[&out], 9, limit, |_| true);
    assert_eq!(answers.len(), 9, "{security}\nlog:\n{}", eddy.log());
    let dead = read_from(plain, &[&format!("{topic}.dlq")], 1, limit, |_| true);
    assert_eq!(dead.len(), 1, "{security}\nlog:\n{}", eddy.log());
    assert_eq!(dead[0].json()["event_id"], ids[3]);
    eddy
}

#[test]
fn sasl_scram_sasl_plain_and_mutual_tls_work_and_refusals_are_said() {
    let (mut broker, pki, sasl, mtls) = secure_broker();
    let plain = broker.bootstrap();
    let ca = pki.path("ca.pem");

    // SASL_SSL with SCRAM-SHA-512, the password from the environment.
    let scram = format!(
        "protocol = \"sasl_ssl\"\nmechanism = \"SCRAM-SHA-512\"\nusername = \"eddy\"\n\
         password_env = \"EDDY_TEST_KAFKA_PASSWORD\"\nca_file = {ca:?}\n"
    );
    let mut eddy = round_trip(
        &plain,
        &sasl.bootstrap(),
        &scram,
        &[("EDDY_TEST_KAFKA_PASSWORD", SCRAM_PASSWORD)],
        true,
    );
    let log = eddy.log();
    assert!(
        log.contains("(SASL_SSL SCRAM-SHA-512 as \"eddy\")"),
        "{log}"
    );
    assert!(
        !log.contains(SCRAM_PASSWORD),
        "the password reached the log"
    );
    eddy.stop();

    // SASL_SSL with PLAIN (a cloud provider's API key), from a file.
    let secret = pki.path("plain-password");
    std::fs::write(&secret, format!("{PLAIN_PASSWORD}\n")).expect("secret file");
    let plain_config = format!(
        "protocol = \"SASL_SSL\"\nmechanism = \"PLAIN\"\nusername = \"apikey\"\n\
         password_file = {secret:?}\nca_file = {ca:?}\n"
    );
    round_trip(&plain, &sasl.bootstrap(), &plain_config, &[], true).stop();

    // Mutual TLS.
    let mutual = format!(
        "protocol = \"ssl\"\nca_file = {ca:?}\ncertificate_file = {:?}\nkey_file = {:?}\n",
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let mut eddy = round_trip(&plain, &mtls.bootstrap(), &mutual, &[], true);
    assert!(eddy.log().contains("(SSL with a client certificate)"));
    eddy.stop();

    // A wrong password: said in the log and by /readyz; nothing consumed.
    let mut eddy = round_trip(
        &plain,
        &sasl.bootstrap(),
        &scram,
        &[("EDDY_TEST_KAFKA_PASSWORD", "wrong")],
        false,
    );
    assert!(
        eddy.wait_for_log("Authentication failed", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let (status, body) = http_get(&eddy.http_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Authentication failed"), "{body}");
    assert!(eddy.is_running());
    eddy.stop();

    // A CA that did not sign the broker's certificate.
    let stranger = format!(
        "protocol = \"ssl\"\nca_file = {:?}\ncertificate_file = {:?}\nkey_file = {:?}\n",
        pki.path("other-ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let mut eddy = round_trip(&plain, &mtls.bootstrap(), &stranger, &[], false);
    assert!(
        eddy.wait_for_log("certificate verify failed", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let (status, body) = http_get(&eddy.http_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate verify failed"), "{body}");
    eddy.stop();

    // An expired client certificate: the broker refuses the handshake.
    let expired = format!(
        "protocol = \"ssl\"\nca_file = {ca:?}\ncertificate_file = {:?}\nkey_file = {:?}\n",
        pki.path("expired-client.pem"),
        pki.path("expired-client.key")
    );
    let mut eddy = round_trip(&plain, &mtls.bootstrap(), &expired, &[], false);
    // The broker (Java) answers an expired certificate with the TLS alert
    // "certificate unknown".
    assert!(
        eddy.wait_for_log("alert certificate unknown", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let (status, body) = http_get(&eddy.http_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("alert certificate unknown"), "{body}");
    eddy.stop();
    broker.stop();
}

#[test]
fn eddy_check_names_a_missing_secret_without_its_value() {
    let config = format!(
        "{}\n[kafka.security]\nprotocol = \"sasl_ssl\"\nmechanism = \"SCRAM-SHA-512\"\n\
         username = \"eddy\"\npassword_env = \"EDDY_TEST_UNSET_PASSWORD_VARIABLE\"\n\
         ca_file = \"/nonexistent/ca.pem\"\n",
        tagger_config(&unique("g"), "t", "t.out")
    );
    let (code, output) = crate::harness::check(&config, &[PluginFile::Test("tagger")], &[]);
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("password_env names EDDY_TEST_UNSET_PASSWORD_VARIABLE, which is not set"),
        "{output}"
    );
    assert!(
        output.contains("ca_file: /nonexistent/ca.pem cannot be read"),
        "{output}"
    );
}
