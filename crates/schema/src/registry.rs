//! A Confluent-compatible schema registry, read over plain HTTP: schemas by
//! id (the id in a record's frame) and a subject's latest version (an
//! event type's schema). A schema it answers is compiled once and kept: an
//! id names one schema for good. Any other answer about an id (none, or a
//! schema eddy cannot check against), and a subject's latest, are asked
//! again after [`REFRESH`] (an id it does not have is waited for, for
//! [`NEW_ID_GRACE`], before it is taken for unknown), and a subject's is kept meanwhile if the
//! registry does not answer. An answer that is not the registry's (a body
//! that is not JSON, a redirect, a body cut short) means the registry is
//! unavailable, as a refused connection does: what needs it waits.

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
/// How long an id the registry says it does not have is asked again before
/// the record naming it is given up (`schema-unknown`): a producer may use
/// an id the moment it registered it, before every node of the registry
/// (or a cache in front of it) knows it.
const NEW_ID_GRACE: Duration = Duration::from_secs(10);
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
    /// The URL as configured: never said anywhere, it may hold a password.
    configured: String,
    /// The URL without its user and password: what is said of it.
    base: String,
    /// `Authorization`, from the URL's user and password.
    authorization: Option<String>,
    agent: ureq::Agent,
    by_id: Mutex<HashMap<u32, (Instant, Lookup)>>,
    by_subject: Mutex<HashMap<String, (Instant, Lookup)>>,
    /// When the registry first said it does not have an id.
    missing_since: Mutex<HashMap<u32, Instant>>,
    new_id_grace: Duration,
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
            .max_redirects(0)
            .build()
            .into();
        let configured = base.trim_end_matches('/').to_string();
        let (base, authorization) = without_userinfo(&configured);
        Registry {
            configured,
            base,
            authorization,
            agent,
            by_id: Mutex::new(HashMap::new()),
            by_subject: Mutex::new(HashMap::new()),
            missing_since: Mutex::new(HashMap::new()),
            new_id_grace: NEW_ID_GRACE,
            trouble: Mutex::new(None),
        }
    }

    /// The registry of `config`, if it names one, logging in with the
    /// user and password its `registry_*` settings give (or the URL's).
    pub fn of(config: &eddy_core::config::SchemasConfig) -> Option<Registry> {
        let mut registry = Registry::new(config.registry.as_deref()?);
        // A login that cannot be read was refused before (`eddy check`,
        // start-up); should it fail since, the registry says 401.
        if let Ok(Some((user, password))) = config.registry_login() {
            registry.authorization = Some(basic(&user, &password));
        }
        Some(registry)
    }

    /// The registry's URL without its user and password, if it had them.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether this is the registry `url` (as configured) names.
    pub fn is_at(&self, url: &str) -> bool {
        self.configured == url.trim_end_matches('/')
    }

    /// Why the registry is not answering, if it was not last time asked.
    pub fn trouble(&self) -> Option<String> {
        lock(&self.trouble).clone()
    }

    /// The schema the registry gave id `id`.
    pub fn by_id(&self, id: u32) -> Result<Lookup, Unavailable> {
        if let Some((at, known)) = lock(&self.by_id).get(&id)
            && (matches!(known, Lookup::Found(_)) || at.elapsed() < REFRESH)
        {
            return Ok(known.clone());
        }
        let lookup = self.fetch(&format!("/schemas/ids/{id}"), || {
            format!("schema id {id} of the registry at {}", self.base)
        })?;
        if matches!(lookup, Lookup::Missing) && self.too_new(id) {
            return Err(Unavailable(format!(
                "schema id {id} is not known to the registry at {} yet; asked again for \
                 {:?} after it was first asked",
                self.base, self.new_id_grace
            )));
        }
        let mut ids = lock(&self.by_id);
        if !matches!(lookup, Lookup::Found(_)) && ids.len() >= MAX_MISSING {
            ids.retain(|_, (_, l)| matches!(l, Lookup::Found(_)));
        }
        ids.insert(id, (Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    /// Whether the registry first said it does not have `id` less than
    /// [`NEW_ID_GRACE`] ago. Ids come from records: past [`MAX_MISSING`]
    /// of them at once, a new one gets no grace.
    fn too_new(&self, id: u32) -> bool {
        let mut since = lock(&self.missing_since);
        let grace = self.new_id_grace;
        if since.len() >= MAX_MISSING && !since.contains_key(&id) {
            since.retain(|_, at| at.elapsed() < grace);
            if since.len() >= MAX_MISSING {
                return false;
            }
        }
        since.entry(id).or_insert_with(Instant::now).elapsed() < grace
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
        if !matches!(lookup, Lookup::Found(_)) && subjects.len() >= MAX_MISSING {
            subjects.retain(|_, (_, l)| matches!(l, Lookup::Found(_)));
        }
        subjects.insert(subject.to_string(), (Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    /// One GET of a schema; `what` names it in what is said of it. Its
    /// time counts in [`time_waited`].
    fn fetch(&self, path: &str, what: impl Fn() -> String) -> Result<Lookup, Unavailable> {
        let started = Instant::now();
        let fetched = self.fetch_now(path, what);
        WAITED.set(WAITED.get() + started.elapsed());
        fetched
    }

    fn fetch_now(&self, path: &str, what: impl Fn() -> String) -> Result<Lookup, Unavailable> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.call();
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
                // A proxy's page, a login form: not the registry speaking.
                Err(e) => {
                    return Err(self.failed(format!(
                        "the schema registry at {} answered {url} with something that is not \
                         a registry's answer ({e}): {}",
                        self.base,
                        eddy_core::text::OneLine(
                            body.chars().take(200).collect::<String>().as_str()
                        )
                    )));
                }
            },
            // Too large: the schema's own fault, not the registry's.
            (200, Err(ureq::Error::BodyExceedsLimit(limit))) => Lookup::Unusable(format!(
                "{}: the schema is larger than {limit} bytes",
                what()
            )),
            // Cut short, timed out: asked again.
            (200, Err(e)) => {
                return Err(self.failed(format!(
                    "the schema registry at {} did not finish answering {url}: {e}",
                    self.base
                )));
            }
            (404, _) => Lookup::Missing,
            // eddy follows no redirect: a registry does not send one, a
            // proxy's login page does.
            (300..=399, _) => {
                return Err(self.failed(format!(
                    "the schema registry at {} answered {url} with a redirect (HTTP {status}{}); \
                     set [schemas] registry to where the registry itself answers",
                    self.base,
                    response
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .map(|l| format!(" to {}", eddy_core::text::OneLine(l)))
                        .unwrap_or_default()
                )));
            }
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

thread_local! {
    static WAITED: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// The time this thread has spent waiting on registries, all told: the
/// difference across a call is what the call waited on them (and not what
/// it spent compiling or checking).
pub fn time_waited() -> Duration {
    WAITED.get()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `url` without the `user:password@` of its authority, and the HTTP Basic
/// `Authorization` they make (percent-escapes decoded), if it had them.
fn without_userinfo(url: &str) -> (String, Option<String>) {
    let (base, userinfo) = eddy_core::text::split_userinfo(url);
    let authorization = userinfo.map(|userinfo| {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        basic(&percent_decoded(user), &percent_decoded(password))
    });
    (base, authorization)
}

/// The `Authorization` value of HTTP Basic auth.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                at += 3;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// A registry stub for fault injection: answers its connections with
    /// `answers` (status line and headers, body), in turn; how many it
    /// answered.
    fn stub(answers: Vec<(&'static str, &'static str)>) -> (String, Arc<Mutex<usize>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(0));
        let count = asked.clone();
        std::thread::spawn(move || {
            for (answer, stream) in answers.into_iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                *lock(&count) += 1;
                let (head, body) = answer;
                let _ = write!(
                    stream,
                    "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (base, asked)
    }

    const SCHEMA: &str = r#"{"schema":"{\"type\":\"object\"}","schemaType":"JSON","id":7}"#;

    #[test]
    fn a_page_that_is_not_the_registrys_answer_is_not_kept() {
        let (base, asked) = stub(vec![
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/html",
                "<html>Sign in</html>",
            ),
            ("HTTP/1.1 302 Found\r\nLocation: http://login.example/", ""),
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json", SCHEMA),
        ]);
        let registry = Registry::new(&base);
        let Err(Unavailable(why)) = registry.by_id(7) else {
            panic!("an HTML page was taken for an answer");
        };
        assert!(why.contains("not a registry's answer"), "{why}");
        let Err(Unavailable(why)) = registry.by_id(7) else {
            panic!("a redirect was followed or taken for an answer");
        };
        assert!(
            why.contains("redirect (HTTP 302 to http://login.example/)"),
            "{why}"
        );
        assert!(matches!(registry.by_id(7), Ok(Lookup::Found(_))));
        assert!(registry.trouble().is_none());
        // A schema is kept: the registry is not asked again.
        assert!(matches!(registry.by_id(7), Ok(Lookup::Found(_))));
        assert_eq!(*lock(&asked), 3);
    }

    #[test]
    fn an_id_the_registry_does_not_have_yet_is_asked_again_for_a_while() {
        let missing = ("HTTP/1.1 404 Not Found", r#"{"error_code":40403}"#);
        let (base, asked) = stub(vec![
            missing,
            ("HTTP/1.1 200 OK\r\nContent-Type: application/json", SCHEMA),
            missing,
            missing,
        ]);
        let mut registry = Registry::new(&base);
        registry.new_id_grace = Duration::from_millis(300);
        let Err(Unavailable(why)) = registry.by_id(7) else {
            panic!("an id missing at first was given up at once");
        };
        assert!(why.contains("not known to the registry"), "{why}");
        assert!(registry.trouble().is_none(), "the registry answered");
        assert!(matches!(registry.by_id(7), Ok(Lookup::Found(_))));
        // Another id: waited for, then unknown once the grace is over.
        assert!(registry.by_id(8).is_err());
        std::thread::sleep(Duration::from_millis(350));
        assert!(matches!(registry.by_id(8), Ok(Lookup::Missing)));
        assert_eq!(*lock(&asked), 4);
    }

    #[test]
    fn a_password_in_the_url_is_sent_as_basic_auth_and_never_said() {
        assert_eq!(
            without_userinfo("http://registry:8081/apis"),
            ("http://registry:8081/apis".to_string(), None)
        );
        let (base, auth) = without_userinfo("https://ada:p%40ss@registry:8081/x@y");
        assert_eq!(base, "https://registry:8081/x@y");
        // "ada:p@ss"
        assert_eq!(auth.as_deref(), Some("Basic YWRhOnBAc3M="));

        let (stub_base, _) = stub(vec![("HTTP/1.1 503 Service Unavailable", "s3cret-down")]);
        let url = stub_base.replace("http://", "http://eddy:s3cret@");
        let registry = Registry::new(&url);
        assert!(registry.is_at(&url) && registry.is_at(&format!("{url}/")));
        assert!(!registry.is_at(&stub_base));
        assert!(!registry.base().contains("s3cret"));
        assert!(!format!("{registry:?}").contains("s3cret"));
        let Err(Unavailable(why)) = registry.by_id(1) else {
            panic!("a 503 was taken for an answer");
        };
        assert!(why.contains("HTTP 503"), "{why}");
        assert!(!why.contains("eddy:s3cret"), "{why}");
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
