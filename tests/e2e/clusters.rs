//! What real clusters send and need: records compressed with every codec
//! Kafka has (by librdkafka and by the Java client), follow-ups eddy compresses itself, and TLS and SASL (the
//! shared broker's secured listeners, which `cargo xtask kafka start`
//! makes).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::failures::tagger_config;
use crate::harness::{
    Eddy, PluginFile, bootstrap, create_topics, env_path, http_get, producer_with, read_from,
    read_to_end, seed_event, unique,
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
        // The Java client (its own codec libraries) writes them too.
        let lines: String = (0..PER_CODEC)
            .map(|n| {
                let id = format!("java-{codec}-{n}");
                let key = format!("key-{}", n % 8);
                let data = json!({"seq": n, "codec": codec, "filler": "abcdefgh".repeat(20)});
                sent.insert(id.clone());
                format!("{key}\t{}\n", seed_event(&id, "codec.event", &key, data))
            })
            .collect();
        java_produce(&topic, codec, &lines);
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

/// Writes `lines` (`key<TAB>value`) to `topic` with the Java client's
/// console producer, compressing with `codec`.
fn java_produce(topic: &str, codec: &str, lines: &str) {
    use std::io::Write;
    let mut child = crate::harness::kafka_java(&[
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server",
        &bootstrap(),
        "--topic",
        topic,
        "--compression-codec",
        codec,
        "--command-property",
        "linger.ms=50",
        "--reader-property",
        "parse.key=true",
        "--reader-property",
        "key.separator=\t",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("java");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("write to the console producer");
    let out = child.wait_with_output().expect("console producer");
    assert!(
        out.status.success(),
        "the Java console producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The compression codecs of the record batches the local broker stored
/// for `topic`, read from its log segments: a batch (format v2) is its base
/// offset (8 bytes), its length (4), then 4 + 1 + 4 bytes of epoch, magic
/// and CRC, then 2 bytes of attributes whose low 3 bits name the codec.
pub fn codecs_on_disk(topic: &str, partitions: i32) -> Vec<&'static str> {
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

/// The shared broker's secured listeners and files (`cargo xtask kafka
/// start` makes them): SASL_SSL with the SCRAM-SHA-512 user `eddy` and the
/// PLAIN user `apikey`, SSL with client certificates required, and the
/// certificates and passwords in one folder.
struct Secured {
    sasl_ssl: String,
    ssl: String,
    tls: PathBuf,
}

impl Secured {
    fn from_env() -> Secured {
        Secured {
            sasl_ssl: std::env::var("EDDY_KAFKA_SASL_SSL").expect("EDDY_KAFKA_SASL_SSL"),
            ssl: std::env::var("EDDY_KAFKA_SSL").expect("EDDY_KAFKA_SSL"),
            tls: env_path("EDDY_KAFKA_TLS"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.tls.join(name).display().to_string()
    }

    fn scram_password(&self) -> String {
        std::fs::read_to_string(self.tls.join("scram-password"))
            .expect("scram-password")
            .trim_end()
            .to_string()
    }
}

/// A topic with ten events, one of which fails for good, and where its
/// answers go.
struct Work {
    topic: String,
    out: String,
    group: String,
    ids: Vec<String>,
}

impl Work {
    fn new() -> Work {
        let (topic, out, group) = (unique("secure"), unique("secure.out"), unique("g"));
        create_topics(&[&topic, &out], 1);
        let producer = crate::harness::producer();
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
        Work {
            topic,
            out,
            group,
            ids,
        }
    }

    /// eddy on `listener` with `security` (the body of `[kafka.security]`)
    /// and `env`.
    fn eddy(&self, listener: &str, security: &str, env: &[(&str, &str)]) -> Eddy {
        let config = format!(
            "{}\n[kafka.security]\n{security}",
            tagger_config(&self.group, &self.topic, &self.out)
                .replace("[plugin.tagger]\n", "[plugin.tagger]\nmax_retries = 0\n")
        );
        let mut env = env.to_vec();
        env.push(("KAFKA_BOOTSTRAP_SERVERS", listener));
        Eddy::start_with_env(&config, &[PluginFile::Test("tagger")], &env)
    }

    /// Nine answers and one dead letter came out, each once.
    fn assert_done(&self, eddy: &Eddy, what: &str) {
        let limit = Duration::from_secs(60);
        let answers = read_from(&bootstrap(), &[&self.out], 9, limit, |_| true);
        assert_eq!(answers.len(), 9, "{what}\nlog:\n{}", eddy.log());
        let dlq = format!("{}.dlq", self.topic);
        let dead = read_from(&bootstrap(), &[&dlq], 1, limit, |_| true);
        assert_eq!(dead.len(), 1, "{what}\nlog:\n{}", eddy.log());
        assert_eq!(dead[0].json()["event_id"], self.ids[3]);
    }

    /// Nothing came out: the output topic is empty to its high-water mark.
    fn assert_untouched(&self, eddy: &Eddy) {
        let answers = read_to_end(&[&self.out], |_| true);
        assert!(answers.is_empty(), "log:\n{}", eddy.log());
    }
}

/// An unsecured JWT (`"alg": "none"`, no signature) for `subject`, valid
/// for ten minutes: what Kafka's default OAUTHBEARER validator accepts.
fn unsecured_jwt(subject: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = base64url(br#"{"alg":"none"}"#);
    let claims = json!({"sub": subject, "iat": now, "exp": now + 600}).to_string();
    format!("{header}.{}.", base64url(claims.as_bytes()))
}

/// Base64url without padding (RFC 4648 §5), as JWTs write it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Waits for `needle` in eddy's log, then asks `/readyz`: 503, saying so.
fn assert_refused_and_said(eddy: &Eddy, needle: &str) {
    assert!(
        eddy.wait_for_log(needle, 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let (status, body) = http_get(&eddy.http_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(needle), "{body}");
}

#[test]
fn sasl_scram_sasl_plain_and_mutual_tls_work_and_refusals_are_said() {
    let secured = Secured::from_env();
    let ca = secured.path("ca.pem");
    let password = secured.scram_password();

    // SASL_SSL with SCRAM-SHA-512, the password from the environment. A
    // wrong one first: refused, said, nothing consumed; then the right one
    // handles every event.
    let work = Work::new();
    let scram = format!(
        "protocol = \"sasl_ssl\"\nmechanism = \"SCRAM-SHA-512\"\nusername = \"eddy\"\n\
         password_env = \"EDDY_TEST_KAFKA_PASSWORD\"\nca_file = {ca:?}\n"
    );
    let env = [("EDDY_TEST_KAFKA_PASSWORD", "wrong")];
    let mut eddy = work.eddy(&secured.sasl_ssl, &scram, &env);
    assert_refused_and_said(&eddy, "Authentication failed");
    work.assert_untouched(&eddy);
    eddy.stop();
    let env = [("EDDY_TEST_KAFKA_PASSWORD", password.as_str())];
    let mut eddy = work.eddy(&secured.sasl_ssl, &scram, &env);
    work.assert_done(&eddy, &scram);
    let log = eddy.log();
    assert!(
        log.contains("(SASL_SSL SCRAM-SHA-512 as \"eddy\")"),
        "{log}"
    );
    assert!(!log.contains(&password), "the password reached the log");
    eddy.stop();

    // SASL_SSL with PLAIN (a cloud provider's API key), from a file.
    let work = Work::new();
    let plain = format!(
        "protocol = \"SASL_SSL\"\nmechanism = \"PLAIN\"\nusername = \"apikey\"\n\
         password_file = {:?}\nca_file = {ca:?}\n",
        secured.path("plain-password")
    );
    let mut eddy = work.eddy(&secured.sasl_ssl, &plain, &[]);
    work.assert_done(&eddy, &plain);
    eddy.stop();

    // SASL_SSL with OAUTHBEARER: a JWT from a file (the broker validates
    // unsecured tokens), then an unsecured token eddy makes for a principal.
    let work = Work::new();
    let token_file = std::env::temp_dir().join(unique("eddy-token"));
    std::fs::write(&token_file, unsecured_jwt("eddy")).expect("token file");
    let from_file = format!(
        "protocol = \"sasl_ssl\"\nmechanism = \"OAUTHBEARER\"\n\
         oauthbearer_token_file = {:?}\nca_file = {ca:?}\n",
        token_file.display().to_string()
    );
    let mut eddy = work.eddy(&secured.sasl_ssl, &from_file, &[]);
    work.assert_done(&eddy, &from_file);
    eddy.stop();
    let _ = std::fs::remove_file(&token_file);
    let work = Work::new();
    let unsecured = format!(
        "protocol = \"sasl_ssl\"\nmechanism = \"OAUTHBEARER\"\n\
         oauthbearer_principal = \"eddy\"\nca_file = {ca:?}\n"
    );
    let mut eddy = work.eddy(&secured.sasl_ssl, &unsecured, &[]);
    work.assert_done(&eddy, &unsecured);
    eddy.stop();

    // Mutual TLS; first with a CA that did not sign the broker's
    // certificate, then with an expired client certificate (the broker, in
    // Java, answers it with the TLS alert "certificate unknown"), then right.
    let work = Work::new();
    let mutual = |ca: &str, client: &str| {
        format!(
            "protocol = \"ssl\"\nca_file = {ca:?}\ncertificate_file = {:?}\nkey_file = {:?}\n",
            secured.path(&format!("{client}.pem")),
            secured.path(&format!("{client}.key"))
        )
    };
    let stranger = mutual(&secured.path("other-ca.pem"), "client");
    let mut eddy = work.eddy(&secured.ssl, &stranger, &[]);
    assert_refused_and_said(&eddy, "certificate verify failed");
    eddy.stop();
    let mut eddy = work.eddy(&secured.ssl, &mutual(&ca, "expired-client"), &[]);
    assert_refused_and_said(&eddy, "alert certificate unknown");
    work.assert_untouched(&eddy);
    eddy.stop();
    let right = mutual(&ca, "client");
    let mut eddy = work.eddy(&secured.ssl, &right, &[]);
    work.assert_done(&eddy, &right);
    assert!(eddy.log().contains("(SSL with a client certificate)"));
    eddy.stop();
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
