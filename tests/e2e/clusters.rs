//! What real clusters send and need: records compressed with every codec
//! Kafka has, and follow-ups eddy compresses itself.

use std::collections::HashSet;

use serde_json::json;

use crate::failures::tagger_config;
use crate::harness::{
    Eddy, PluginFile, bootstrap, create_topics, env_path, producer_with, read_to_end, seed_event,
    unique,
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
