//! Schemas of events' `data`, checked at both doors: an event is checked
//! before any plugin sees it (invalid: dead-lettered `schema-invalid`), a
//! follow-up when its plugin publishes it (invalid: `publish` returns
//! `invalid`).
//!
//! A schema describes `data`, not the whole envelope: the envelope is
//! eddy's own contract, checked for every record when it is decoded, while
//! `data` is what differs by event type and version and what a plugin
//! reads. So one schema serves the three wire formats alike, and in
//! CloudEvents binary, where the record's value is the data, it is exactly
//! what a Confluent serializer checked when it wrote the value.
//!
//! Where an event's schema comes from, first found first:
//! 1. the Confluent frame of its record (a zero byte, then a 4-byte
//!    big-endian schema id): the registry's schema of that id;
//! 2. the schema files (`files`): its type and version's, else its type's;
//! 3. the registry: the latest version of its subject (the event type, or
//!    `<topic>-value`).
//!
//! A registry that does not answer is not the event's fault: the check says
//! [`Unavailable`], and the partition waits and asks again.
//!
//! # Layout
//! - this file: a compiled [`Schema`], the [`Schemas`] of a snapshot and
//!   their checks in and out, the Confluent frame ([`framed`],
//!   [`unframe`]);
//! - `check`: `eddy check`'s lines about schemas;
//! - `files`: the schema folder, read and reloaded whole;
//! - `registry`: the Confluent-compatible registry client and its cache.
//!
//! # Invariant
//! A check never blocks a record on anything but the registry, and then
//! only as [`Unavailable`] (the caller waits); every other answer is the
//! event's own: valid, or refused with a reason for its dead letter.

mod check;
mod files;
mod registry;

use std::sync::Arc;

use serde_json::Value;

pub use check::check;
pub use files::{Catalog, Loader};
pub use registry::{Lookup, Registry, time_waited as registry_time_waited};

use eddy_core::config::{SchemasConfig, SubjectStrategy, UnknownSchema};
use eddy_core::metrics;
use eddy_core::text::OneLine;

/// Largest schema file or registry answer read.
pub const MAX_SCHEMA_BYTES: u64 = 1024 * 1024;
/// Longest subject looked up in the registry.
const MAX_SUBJECT_BYTES: usize = 255;
/// An event's type or version is cut to this many characters where it is
/// quoted (a dead letter's reason, a log line): it comes from outside.
const MAX_SHOWN_CHARS: usize = 100;
/// Validation errors named in a refusal, at most.
const MAX_PROBLEMS: usize = 3;
/// A validation error's message is cut to this many characters: it may
/// quote the value that failed.
const MAX_PROBLEM_CHARS: usize = 160;

/// Records (or follow-ups) waiting now for the schema registry to answer.
static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many records wait for the schema registry now, across partitions.
pub fn waiting() -> usize {
    WAITING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one record waiting for the schema registry while it is held.
pub struct Waiting(());

impl Waiting {
    pub fn new() -> Waiting {
        WAITING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(())
    }
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting::new()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The schema registry did not answer; the text says how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Why an event is refused at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its `data` does not match its schema.
    Invalid(String),
    /// It has no schema that can be checked against: none where
    /// `unknown = "dead-letter"`, an id the registry does not know, a
    /// schema that is not JSON Schema.
    Unknown(String),
}

impl Refusal {
    /// The dead-letter reason's name.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "schema-invalid",
            Refusal::Unknown(_) => "schema-unknown",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Refusal::Invalid(detail) | Refusal::Unknown(detail) => detail,
        }
    }
}

/// One compiled JSON Schema.
pub struct Schema {
    /// Where it came from: a file's path, or a registry id or subject.
    pub origin: String,
    /// Its registry id, if it came from the registry.
    pub id: Option<u32>,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles `text`; the error says why it is not a usable schema.
    pub fn compile(text: &str, origin: String, id: Option<u32>) -> Result<Schema, String> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&document)
            .map_err(|e| format!("not a valid JSON Schema: {}", capped(&e.to_string())))?;
        Ok(Schema {
            origin,
            id,
            validator,
        })
    }

    /// Checks `data`; the error names the first few fields that fail, each
    /// as a JSON pointer from the event (`/data/email: …`).
    pub fn check(&self, data: &Value) -> Result<(), String> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        let mut problems = Vec::new();
        let mut more = 0;
        for error in self.validator.iter_errors(data) {
            if problems.len() == MAX_PROBLEMS {
                more += 1;
                continue;
            }
            problems.push(format!(
                "/data{}: {}",
                error.instance_path().as_str(),
                capped(&error.to_string())
            ));
        }
        let mut text = problems.join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        Err(text)
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("origin", &self.origin)
            .finish()
    }
}

fn capped(text: &str) -> String {
    cut(text, MAX_PROBLEM_CHARS)
}

/// An event's type or version as quoted.
fn shown(text: &str) -> String {
    cut(text, MAX_SHOWN_CHARS)
}

/// `text` on one line, cut to `max` characters.
fn cut(text: &str, max: usize) -> String {
    let line = OneLine(text).to_string();
    match line.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

/// The schemas events are checked against: the files of one snapshot and
/// the registry.
pub struct Schemas {
    files: Catalog,
    registry: Option<Arc<Registry>>,
    subject: SubjectStrategy,
    unknown: UnknownSchema,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("registry", &self.registry)
            .field("unknown", &self.unknown)
            .finish()
    }
}

/// What an event's schema lookup found.
pub(crate) enum Found {
    /// A schema, and whether it is kept under the event's type (a file, or
    /// a registry subject named after the type): only then is the type a
    /// metric label, so made-up types cannot grow the metrics.
    Schema(Arc<Schema>, bool),
    None,
    Unusable(String),
}

impl Schemas {
    pub fn new(config: &SchemasConfig, files: Catalog, registry: Option<Arc<Registry>>) -> Schemas {
        Schemas {
            files,
            registry,
            subject: config.subject,
            unknown: config.unknown,
        }
    }

    /// Nothing to check: no schema anywhere, and events without one pass.
    pub fn is_off(&self) -> bool {
        self.files.is_empty() && self.registry.is_none() && self.unknown == UnknownSchema::Allow
    }

    pub fn files(&self) -> &Catalog {
        &self.files
    }

    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
    }

    /// Checks an event at the door in. `framed` is the schema id of its
    /// record's Confluent frame, if it had one.
    pub fn check_in(
        &self,
        topic: &str,
        event_type: &str,
        version: &str,
        data: &str,
        framed: Option<u32>,
    ) -> Result<Result<(), Refusal>, Unavailable> {
        let found = self.find(topic, event_type, version, framed)?;
        let label = match &found {
            Found::Schema(_, true) => event_type,
            _ => "",
        };
        let verdict = match found {
            Found::Schema(schema, _) => match parsed(data).and_then(|data| schema.check(&data)) {
                Ok(()) => Ok(()),
                Err(problems) => Err(Refusal::Invalid(format!(
                    "{} {} against {}: {problems}",
                    shown(event_type),
                    shown(version),
                    schema.origin
                ))),
            },
            Found::Unusable(why) => Err(Refusal::Unknown(why)),
            Found::None => match self.unknown {
                UnknownSchema::Allow => {
                    metrics::schema_check("in", label, "no-schema");
                    return Ok(Ok(()));
                }
                UnknownSchema::DeadLetter => {
                    Err(Refusal::Unknown(self.none_for(topic, event_type, version)))
                }
            },
        };
        metrics::schema_check(
            "in",
            label,
            match &verdict {
                Ok(()) => "valid",
                Err(Refusal::Invalid(_)) => "invalid",
                Err(Refusal::Unknown(_)) => "unknown",
            },
        );
        Ok(verdict)
    }

    /// Checks a follow-up a plugin publishes to `topic`. `Ok(Err(why))` is
    /// what `publish` returns as `invalid`. With `want_id`, the follow-up
    /// is to be framed: it needs a registry schema, whose id is returned.
    pub fn check_out(
        &self,
        topic: &str,
        event_type: &str,
        version: &str,
        data: &str,
        want_id: bool,
    ) -> Result<Result<Option<u32>, String>, Unavailable> {
        let found = if want_id {
            match self.by_subject(topic, event_type)? {
                Found::None => {
                    return Ok(Err(format!(
                        "wire_format = \"confluent\" needs a registry schema for \
                         {}, and subject {:?} has none",
                        shown(event_type),
                        shown(&self.subject_of(topic, event_type))
                    )));
                }
                found => found,
            }
        } else {
            self.find(topic, event_type, version, None)?
        };
        let label = match &found {
            Found::Schema(_, true) => event_type,
            _ => "",
        };
        let verdict = match found {
            Found::Schema(schema, _) => match parsed(data).and_then(|data| schema.check(&data)) {
                Ok(()) => Ok(schema.id),
                Err(problems) => Err(format!("{problems} ({})", schema.origin)),
            },
            Found::Unusable(why) => Err(why),
            Found::None => match self.unknown {
                UnknownSchema::Allow => {
                    metrics::schema_check("out", label, "no-schema");
                    return Ok(Ok(None));
                }
                UnknownSchema::DeadLetter => Err(format!(
                    "{}, and [schemas] unknown is \"dead-letter\"",
                    self.none_for(topic, event_type, version)
                )),
            },
        };
        let outcome = if verdict.is_ok() { "valid" } else { "invalid" };
        metrics::schema_check("out", label, outcome);
        Ok(verdict)
    }

    fn find(
        &self,
        topic: &str,
        event_type: &str,
        version: &str,
        framed: Option<u32>,
    ) -> Result<Found, Unavailable> {
        if let (Some(id), Some(registry)) = (framed, &self.registry) {
            return Ok(match registry.by_id(id)? {
                Lookup::Found(schema) => Found::Schema(schema, false),
                Lookup::Missing => Found::Unusable(format!(
                    "the record's frame names schema id {id}, which the registry at {} \
                     does not have",
                    registry.base()
                )),
                Lookup::Unusable(why) => Found::Unusable(why),
            });
        }
        match self.files.get(event_type, version) {
            Some(Ok(schema)) => return Ok(Found::Schema(schema.clone(), true)),
            Some(Err(refused)) => return Ok(Found::Unusable(refused.clone())),
            None => {}
        }
        self.by_subject(topic, event_type)
    }

    fn by_subject(&self, topic: &str, event_type: &str) -> Result<Found, Unavailable> {
        let Some(registry) = &self.registry else {
            return Ok(Found::None);
        };
        let subject = self.subject_of(topic, event_type);
        // No registry names a subject this long: not worth a request.
        if subject.len() > MAX_SUBJECT_BYTES {
            return Ok(Found::None);
        }
        let named_by_type = self.subject == SubjectStrategy::EventType;
        Ok(match registry.latest(&subject)? {
            Lookup::Found(schema) => Found::Schema(schema, named_by_type),
            Lookup::Missing => Found::None,
            Lookup::Unusable(why) => Found::Unusable(why),
        })
    }

    fn subject_of(&self, topic: &str, event_type: &str) -> String {
        match self.subject {
            SubjectStrategy::EventType => event_type.to_string(),
            SubjectStrategy::TopicValue => format!("{topic}-value"),
        }
    }

    /// Where a schema for the event was looked for.
    fn none_for(&self, topic: &str, event_type: &str, version: &str) -> String {
        let mut places = Vec::new();
        if !self.files.is_empty() {
            places.push("no schema file".to_string());
        }
        if let Some(registry) = &self.registry {
            places.push(format!(
                "no subject {:?} in the registry at {}",
                shown(&self.subject_of(topic, event_type)),
                registry.base()
            ));
        }
        if places.is_empty() {
            places.push("no schema".to_string());
        }
        format!(
            "event type {:?} version {:?} has {}",
            shown(event_type),
            shown(version),
            places.join(" and ")
        )
    }
}

fn parsed(data: &str) -> Result<Value, String> {
    serde_json::from_str(data).map_err(|e| format!("/data: not JSON: {e}"))
}

/// A value in the Confluent wire format: the schema id of its frame, and
/// what follows it. Any other value is returned whole. A JSON text never
/// starts with a zero byte, so the two cannot be confused.
pub fn unframe(value: Option<&[u8]>) -> (Option<u32>, Option<&[u8]>) {
    match value {
        Some([0, a, b, c, d, rest @ ..]) => {
            (Some(u32::from_be_bytes([*a, *b, *c, *d])), Some(rest))
        }
        other => (None, other),
    }
}

/// `payload` after the Confluent frame of schema `id`.
pub fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The schemas of `config`, read once, for commands that do not watch
/// (`eddy test`, `eddy replay`, `eddy check`); the error lists the schema
/// files refused.
pub fn load_once(config: &SchemasConfig) -> Result<Arc<Schemas>, Vec<String>> {
    let catalog = match &config.dir {
        Some(dir) => {
            let (catalog, refused) = files::load(dir, &Catalog::default());
            if !refused.is_empty() {
                return Err(refused
                    .into_iter()
                    .map(|r| format!("schema file {} refused: {}", r.path.display(), r.reason))
                    .collect());
            }
            catalog
        }
        None => Catalog::default(),
    };
    let registry = Registry::of(config).map(Arc::new);
    Ok(Arc::new(Schemas::new(config, catalog, registry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas(files: &[(&str, &str)], unknown: UnknownSchema) -> Schemas {
        let dir = files::tests::folder(files);
        let (catalog, refused) = files::load(&dir, &Catalog::default());
        assert!(refused.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        let config = SchemasConfig {
            unknown,
            ..SchemasConfig::default()
        };
        Schemas::new(&config, catalog, None)
    }

    const USER: &str = r#"{
        "type": "object",
        "required": ["email", "name"],
        "properties": {"email": {"type": "string"}, "name": {"type": "string"}}
    }"#;

    #[test]
    fn invalid_data_is_refused_naming_each_field_from_the_event() {
        let schemas = schemas(&[("user.created.json", USER)], UnknownSchema::Allow);
        let check = |data: &str| {
            schemas
                .check_in("users", "user.created", "1.0", data, None)
                .unwrap()
        };
        assert_eq!(check(r#"{"email":"a@b","name":"A"}"#), Ok(()));
        let Err(Refusal::Invalid(why)) = check(r#"{"email": 7}"#) else {
            panic!("a wrong email passed");
        };
        assert!(
            why.contains("/data/email: 7 is not of type \"string\""),
            "{why}"
        );
        assert!(
            why.contains("/data: \"name\" is a required property"),
            "{why}"
        );
        assert!(why.starts_with("user.created 1.0 against "), "{why}");
        let Err(Refusal::Invalid(why)) = check("[1,") else {
            panic!("broken data passed");
        };
        assert!(why.contains("/data: not JSON"), "{why}");
    }

    #[test]
    fn an_event_without_a_schema_passes_or_is_refused_as_configured() {
        let allow = schemas(&[("user.created.json", USER)], UnknownSchema::Allow);
        assert_eq!(
            allow
                .check_in("t", "order.placed", "1.0", "{}", None)
                .unwrap(),
            Ok(())
        );
        let strict = schemas(&[("user.created.json", USER)], UnknownSchema::DeadLetter);
        let Err(Refusal::Unknown(why)) = strict
            .check_in("t", "order.placed", "1.0", "{}", None)
            .unwrap()
        else {
            panic!("an unknown type passed");
        };
        assert!(
            why.contains("\"order.placed\" version \"1.0\" has no schema file"),
            "{why}"
        );
        let out = strict
            .check_out("t", "order.placed", "1.0", "{}", false)
            .unwrap();
        assert!(out.unwrap_err().contains("unknown is \"dead-letter\""));
    }

    #[test]
    fn many_problems_are_cut_to_the_first_few() {
        let schema = r#"{"type":"object","properties":{
            "a":{"type":"string"},"b":{"type":"string"},"c":{"type":"string"},
            "d":{"type":"string"},"e":{"type":"string"}}}"#;
        let schemas = schemas(&[("t.json", schema)], UnknownSchema::Allow);
        let out = schemas
            .check_out("x", "t", "1", r#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#, false)
            .unwrap()
            .unwrap_err();
        assert_eq!(out.matches("/data/").count(), 3, "{out}");
        assert!(out.contains("and 2 more"), "{out}");
    }

    #[test]
    fn a_frame_is_a_zero_byte_and_a_big_endian_id() {
        let value = framed(258, br#"{"a":1}"#);
        assert_eq!(&value[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(unframe(Some(&value)), (Some(258), Some(&br#"{"a":1}"#[..])));
        assert_eq!(unframe(Some(b"{}")), (None, Some(&b"{}"[..])));
        assert_eq!(unframe(Some(&[0, 1])), (None, Some(&[0u8, 1][..])));
        assert_eq!(unframe(None), (None, None));
    }
}
