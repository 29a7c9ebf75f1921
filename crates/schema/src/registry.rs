//! A Confluent-compatible schema registry, read over plain HTTP: schemas by
//! id (the id in a record's frame) and a subject's latest version (an
//! event type's schema). What it answers is compiled once and kept: an id
//! names one schema for good; an id it does not have, and a subject's
//! latest, are asked again after [`REFRESH`], and a subject's is kept
//! meanwhile if the registry does not answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Schema, Unavailable};
use eddy_core::metrics;

/// How long a subject's latest version is used before it is asked again.
const REFRESH: Duration = Duration::from_secs(30);
/// Longest the registry may take to accept a connection, and to answer.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// Ids and subjects remembered, at most, before those the registry does
/// not have are forgotten: both come from outside, and a flood of made-up
/// ones must not grow memory without end.
const MAX_MISSING: usize = 4096;

/// What the registry says of an id or a subject.
#[derive(Clone)]
pub enum Lookup {
    Found(Arc<Schema>),
    /// No such id, or a subject with no version.
    Missing,
    /// It answered with something eddy cannot check against (not JSON
    /// Schema, not a valid one); the text says what.
    Unusable(String),
}

pub struct Registry {
    base: String,
    agent: ureq::Agent,
    by_id: Mutex<HashMap<u32, (Instant, Lookup)>>,
    by_subject: Mutex<HashMap<String, (Instant, Lookup)>>,
    /// Why the last request failed; `None` once one succeeds.
    trouble: Mutex<Option<String>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base", &self.base)
            .finish()
    }
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/latest`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    schema: String,
    /// Absent means Avro, as in Confluent's own registry.
    schema_type: Option<String>,
    id: Option<u32>,
}

impl Registry {
    pub fn new(base: &str) -> Registry {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_WAIT))
            .timeout_global(Some(ANSWER_WAIT))
            .http_status_as_error(false)
            .build()
            .into();
        Registry {
            base: base.trim_end_matches('/').to_string(),
            agent,
            by_id: Mutex::new(HashMap::new()),
            by_subject: Mutex::new(HashMap::new()),
            trouble: Mutex::new(None),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Why the registry is not answering, if it was not last time asked.
    pub fn trouble(&self) -> Option<String> {
        lock(&self.trouble).clone()
    }

    /// The schema the registry gave id `id`.
    pub fn by_id(&self, id: u32) -> Result<Lookup, Unavailable> {
        if let Some((at, known)) = lock(&self.by_id).get(&id)
            && (!matches!(known, Lookup::Missing) || at.elapsed() < REFRESH)
        {
            return Ok(known.clone());
        }
        let lookup = self.fetch(&format!("/schemas/ids/{id}"), || {
            format!("schema id {id} of the registry at {}", self.base)
        })?;
        let mut ids = lock(&self.by_id);
        if matches!(lookup, Lookup::Missing) && ids.len() >= MAX_MISSING {
            ids.retain(|_, (_, l)| !matches!(l, Lookup::Missing));
        }
        ids.insert(id, (Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    /// The latest schema of `subject`. A registry that does not answer is
    /// an error only if the subject was never fetched: a known one keeps
    /// serving until the registry is back.
    pub fn latest(&self, subject: &str) -> Result<Lookup, Unavailable> {
        let known = lock(&self.by_subject).get(subject).cloned();
        if let Some((at, lookup)) = &known
            && at.elapsed() < REFRESH
        {
            return Ok(lookup.clone());
        }
        let path = format!("/subjects/{}/versions/latest", escaped(subject));
        let lookup = match self.fetch(&path, || {
            format!("subject {subject:?} of the registry at {}", self.base)
        }) {
            Ok(lookup) => lookup,
            Err(unavailable) => match known {
                Some((_, lookup)) => {
                    tracing::warn!(subject, "{unavailable}; the schema fetched before is used");
                    return Ok(lookup);
                }
                None => return Err(unavailable),
            },
        };
        let mut subjects = lock(&self.by_subject);
        if matches!(lookup, Lookup::Missing) && subjects.len() >= MAX_MISSING {
            subjects.retain(|_, (_, l)| !matches!(l, Lookup::Missing));
        }
        subjects.insert(subject.to_string(), (Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    /// One GET of a schema; `what` names it in what is said of it.
    fn fetch(&self, path: &str, what: impl Fn() -> String) -> Result<Lookup, Unavailable> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json")
            .call();
        let mut response = match response {
            Ok(response) => response,
            Err(e) => {
                return Err(self.failed(format!(
                    "the schema registry at {} does not answer: {e}",
                    self.base
                )));
            }
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(super::MAX_SCHEMA_BYTES)
            .read_to_string();
        let lookup = match (status, body) {
            (200, Ok(body)) => match serde_json::from_str::<Answer>(&body) {
                Ok(answer) => {
                    let kind = answer.schema_type.as_deref().unwrap_or("AVRO");
                    if kind.eq_ignore_ascii_case("JSON") {
                        match Schema::compile(&answer.schema, what(), answer.id) {
                            Ok(schema) => Lookup::Found(Arc::new(schema)),
                            Err(e) => Lookup::Unusable(format!("{}: {e}", what())),
                        }
                    } else {
                        Lookup::Unusable(format!(
                            "{} is a {kind} schema; eddy checks JSON Schema only",
                            what()
                        ))
                    }
                }
                Err(e) => Lookup::Unusable(format!(
                    "{}: the registry's answer is not a schema: {e}",
                    what()
                )),
            },
            // Too large, say: the schema's own fault, not the registry's.
            (200, Err(e)) => Lookup::Unusable(format!("{}: {e}", what())),
            (404, _) => Lookup::Missing,
            // The registry is down, overloaded, or will not let eddy in:
            // not the event's fault, so what needs it waits.
            (401 | 403 | 408 | 429 | 500.., body) => {
                let body = body.unwrap_or_default();
                return Err(self.failed(format!(
                    "the schema registry at {} answered {url} with HTTP {status}: {}",
                    self.base,
                    eddy_core::text::OneLine(body.chars().take(200).collect::<String>().as_str())
                )));
            }
            // What the request asked for is wrong (a subject no registry
            // takes): an answer about this event alone.
            (status, _) => {
                Lookup::Unusable(format!("{}: the registry answered HTTP {status}", what()))
            }
        };
        metrics::schema_fetch(if matches!(lookup, Lookup::Missing) {
            "missing"
        } else {
            "ok"
        });
        if lock(&self.trouble).take().is_some() {
            tracing::info!(registry = %self.base, "the schema registry answers again");
        }
        Ok(lookup)
    }

    fn failed(&self, why: String) -> Unavailable {
        metrics::schema_fetch("error");
        let mut trouble = lock(&self.trouble);
        if trouble.is_none() {
            tracing::error!("{why}; events that need a schema from it wait");
        }
        *trouble = Some(why.clone());
        Unavailable(why)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `subject` as one URL path segment.
fn escaped(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for byte in subject.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_one_path_segment() {
        assert_eq!(escaped("user.created"), "user.created");
        assert_eq!(escaped("orders-value"), "orders-value");
        assert_eq!(escaped("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(escaped("é"), "%C3%A9");
    }

    #[test]
    fn a_registry_nobody_listens_on_is_unavailable_and_said_so() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let registry = Registry::new(&format!("http://127.0.0.1:{port}/"));
        let Err(Unavailable(why)) = registry.by_id(1) else {
            panic!("a closed port answered");
        };
        assert!(why.contains("does not answer"), "{why}");
        assert_eq!(registry.trouble().as_deref(), Some(why.as_str()));
    }
}
