//! `[kafka.security]`: how eddy connects to a cluster that wants TLS or
//! SASL, written once for every Kafka client eddy makes. Secrets come from
//! the environment or a file, never from `eddy.toml` itself; what is wrong
//! is said by the variable's or file's name, never by its value.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The librdkafka settings `[kafka.security]` stands for, resolved.
pub type Settings = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `plaintext` (the default), `ssl`, `sasl_plaintext` or `sasl_ssl`:
    /// librdkafka's `security.protocol`.
    pub protocol: Option<String>,
    /// With SASL: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or
    /// `OAUTHBEARER` (librdkafka's `sasl.mechanism`).
    pub mechanism: Option<String>,
    /// The SASL user name, or the variable holding it.
    pub username: Option<String>,
    pub username_env: Option<String>,
    /// The variable, or the file, holding the SASL password.
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The CA certificates (PEM) the brokers' certificates are checked
    /// against; the system's when unset.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: eddy's certificate and private key (PEM).
    pub certificate_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The variable, or the file, holding the private key's password, if
    /// the key is encrypted.
    pub key_password_env: Option<String>,
    pub key_password_file: Option<PathBuf>,
    /// OAUTHBEARER: the token (a JWT) from a variable or a file, read again
    /// each time it is to be refreshed (a rotated Kubernetes service-account
    /// token, say)…
    pub oauthbearer_token_env: Option<String>,
    pub oauthbearer_token_file: Option<PathBuf>,
    /// …or, on development clusters without a token service, an unsecured
    /// token (`"alg": "none"`) for this principal.
    pub oauthbearer_principal: Option<String>,
}

/// Where eddy's OAUTHBEARER token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Unsecured(String),
    Env(String),
    File(PathBuf),
}

/// How long an unsecured token lives before librdkafka asks for the next.
const UNSECURED_LIFETIME_S: i64 = 3600;

/// A token for the brokers: the JWT, its principal, and when it expires
/// (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub token: String,
    pub principal: String,
    pub expires_ms: i64,
}

impl TokenSource {
    /// The token to use now.
    pub fn token(&self) -> Result<Token, String> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let jwt = match self {
            TokenSource::Unsecured(principal) => {
                let exp = now + UNSECURED_LIFETIME_S;
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
                let claims = serde_json::json!({"sub": principal, "iat": now, "exp": exp});
                let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
                return Ok(Token {
                    token: format!("{header}.{payload}."),
                    principal: principal.clone(),
                    expires_ms: exp * 1000,
                });
            }
            TokenSource::Env(variable) => std::env::var(variable)
                .map_err(|_| format!("oauthbearer_token_env names {variable}, which is not set"))?,
            TokenSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "oauthbearer_token_file {} cannot be read: {}",
                    path.display(),
                    e.kind()
                )
            })?,
        };
        let jwt = jwt.trim().to_string();
        let claims = jwt
            .split('.')
            .nth(1)
            .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .ok_or("the OAUTHBEARER token is not a JWT (header.claims.signature)")?;
        let principal = claims["sub"]
            .as_str()
            .ok_or("the OAUTHBEARER token has no \"sub\" claim")?
            .to_string();
        let exp = claims["exp"]
            .as_i64()
            .ok_or("the OAUTHBEARER token has no \"exp\" claim")?;
        if exp <= now {
            return Err(format!("the OAUTHBEARER token expired {} s ago", now - exp));
        }
        Ok(Token {
            token: jwt,
            principal,
            expires_ms: exp * 1000,
        })
    }
}

const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl SecurityConfig {
    /// The protocol, lower-case; `plaintext` when unset.
    fn protocol(&self) -> String {
        self.protocol
            .as_deref()
            .unwrap_or("plaintext")
            .trim()
            .to_ascii_lowercase()
    }

    fn mechanism(&self) -> Option<String> {
        self.mechanism
            .as_deref()
            .map(|m| m.trim().to_ascii_uppercase())
    }

    /// The librdkafka settings, with the secrets read; or what is wrong,
    /// each problem naming the setting to fix.
    pub fn resolve(&self) -> Result<Settings, Vec<String>> {
        let mut settings = Settings::new();
        let mut problems = Vec::new();
        let protocol = self.protocol();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            problems.push(format!(
                "[kafka.security] protocol is {protocol:?}; use one of {PROTOCOLS:?}"
            ));
        }
        if protocol != "plaintext" {
            settings.push(("security.protocol", protocol.clone()));
        }
        let sasl = protocol.starts_with("sasl_");
        let tls = protocol.ends_with("ssl");
        match (self.mechanism(), sasl) {
            (Some(mechanism), true) if MECHANISMS.contains(&mechanism.as_str()) => {
                settings.push(("sasl.mechanism", mechanism.clone()));
                self.resolve_sasl(&mechanism, &mut settings, &mut problems);
            }
            (Some(mechanism), true) => problems.push(format!(
                "[kafka.security] mechanism is {mechanism:?}; use one of {MECHANISMS:?}"
            )),
            (None, true) => problems.push(format!(
                "[kafka.security] protocol {protocol:?} needs a mechanism: one of {MECHANISMS:?}"
            )),
            (Some(_), false) => problems.push(format!(
                "[kafka.security] mechanism is set, but protocol {protocol:?} has no SASL: \
                 use \"sasl_ssl\" or \"sasl_plaintext\""
            )),
            (None, false) => {}
        }
        let files = [
            ("ca_file", "ssl.ca.location", &self.ca_file),
            (
                "certificate_file",
                "ssl.certificate.location",
                &self.certificate_file,
            ),
            ("key_file", "ssl.key.location", &self.key_file),
        ];
        for (name, setting, path) in files {
            let Some(path) = path else {
                continue;
            };
            if !tls {
                problems.push(format!(
                    "[kafka.security] {name} is set, but protocol {protocol:?} has no TLS: \
                     use \"ssl\" or \"sasl_ssl\""
                ));
            }
            match readable(path) {
                Ok(()) => settings.push((setting, path.display().to_string())),
                Err(why) => problems.push(format!("[kafka.security] {name}: {why}")),
            }
        }
        if self.certificate_file.is_some() != self.key_file.is_some() {
            problems.push(
                "[kafka.security] mutual TLS needs both certificate_file and key_file".to_string(),
            );
        }
        let key_password = secret(
            "key_password",
            &self.key_password_env,
            &self.key_password_file,
        );
        match key_password {
            Ok(Some(password)) => settings.push(("ssl.key.password", password)),
            Ok(None) => {}
            Err(why) => problems.push(why),
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(problems)
        }
    }

    /// Where the OAUTHBEARER token comes from, if that is the mechanism.
    pub fn token_source(&self) -> Option<TokenSource> {
        if self.mechanism().as_deref() != Some("OAUTHBEARER") {
            return None;
        }
        match (
            &self.oauthbearer_principal,
            &self.oauthbearer_token_env,
            &self.oauthbearer_token_file,
        ) {
            (Some(principal), None, None) => Some(TokenSource::Unsecured(principal.clone())),
            (None, Some(variable), None) => Some(TokenSource::Env(variable.clone())),
            (None, None, Some(path)) => Some(TokenSource::File(path.clone())),
            _ => None,
        }
    }

    fn resolve_sasl(&self, mechanism: &str, settings: &mut Settings, problems: &mut Vec<String>) {
        if mechanism == "OAUTHBEARER" {
            // eddy hands librdkafka the token itself (the clients' refresh
            // callback); here it is only checked.
            match self.token_source() {
                Some(source) => {
                    if let Err(why) = source.token() {
                        problems.push(format!("[kafka.security] {why}"));
                    }
                }
                None => problems.push(
                    "[kafka.security] mechanism \"OAUTHBEARER\" needs one of \
                     oauthbearer_token_env, oauthbearer_token_file (a JWT) or \
                     oauthbearer_principal (an unsecured token, for development clusters); \
                     a token service (OIDC) is not supported yet"
                        .to_string(),
                ),
            }
            return;
        }
        let username = match (&self.username, &self.username_env) {
            (Some(name), None) => Ok(Some(name.clone())),
            (None, Some(_)) => secret("username", &self.username_env, &None),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err("[kafka.security] set username or username_env, not both".to_string())
            }
        };
        match username {
            Ok(Some(name)) => settings.push(("sasl.username", name)),
            Ok(None) => problems.push(format!(
                "[kafka.security] mechanism {mechanism:?} needs username (or username_env)"
            )),
            Err(why) => problems.push(why),
        }
        match secret("password", &self.password_env, &self.password_file) {
            Ok(Some(password)) => settings.push(("sasl.password", password)),
            Ok(None) => problems.push(format!(
                "[kafka.security] mechanism {mechanism:?} needs password_env or password_file \
                 (a password is never written in eddy.toml)"
            )),
            Err(why) => problems.push(why),
        }
    }

    /// How eddy connects, for the start-up summary: no secret in it.
    pub fn summary(&self) -> String {
        let protocol = self.protocol();
        let mut summary = protocol.to_ascii_uppercase();
        if let Some(mechanism) = self.mechanism().filter(|_| protocol.starts_with("sasl_")) {
            summary.push(' ');
            summary.push_str(&mechanism);
            if let Some(user) = &self.username {
                summary.push_str(&format!(" as {user:?}"));
            }
        }
        if self.certificate_file.is_some() {
            summary.push_str(" with a client certificate");
        }
        summary
    }
}

/// A secret of `[kafka.security]` ([`secret_of`]).
fn secret(
    name: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    secret_of("[kafka.security]", name, env, file)
}

/// A secret from the variable or the file named, one of them at most, as
/// the settings `{name}_env` and `{name}_file` of `table` give them. The
/// file's content without its trailing line break.
pub(crate) fn secret_of(
    table: &str,
    name: &str,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    match (env, file) {
        (Some(_), Some(_)) => Err(format!("{table}: set {name}_env or {name}_file, not both")),
        (Some(variable), None) => match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            Ok(_) => Err(format!(
                "{table} {name}_env names {variable}, which is empty"
            )),
            Err(_) => Err(format!(
                "{table} {name}_env names {variable}, which is not set"
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(value) => {
                let value = value.trim_end_matches(['\r', '\n']);
                if value.is_empty() {
                    Err(format!("{table} {name}_file {} is empty", path.display()))
                } else {
                    Ok(Some(value.to_string()))
                }
            }
            Err(e) => Err(format!(
                "{table} {name}_file {} cannot be read: {}",
                path.display(),
                e.kind()
            )),
        },
        (None, None) => Ok(None),
    }
}

/// Whether the file at `path` can be read; why not, if not.
fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("{} cannot be read: {}", path.display(), e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SecurityConfig {
        toml::from_str(text).expect("valid [kafka.security]")
    }

    #[test]
    fn nothing_set_is_plaintext_with_no_settings() {
        assert_eq!(SecurityConfig::default().resolve(), Ok(Vec::new()));
        assert_eq!(SecurityConfig::default().summary(), "PLAINTEXT");
    }

    #[test]
    fn scram_over_tls_reads_the_password_from_a_file_and_shows_no_secret() {
        let password = std::env::temp_dir().join(format!(
            "eddy-security-test-password-{}",
            std::process::id()
        ));
        std::fs::write(&password, "hunter2\n").unwrap();
        let config = parse(&format!(
            "protocol = \"SASL_SSL\"\nmechanism = \"scram-sha-512\"\nusername = \"eddy\"\n\
             password_file = {:?}\n",
            password.display().to_string()
        ));
        let settings = config.resolve().expect("resolves");
        assert!(settings.contains(&("security.protocol", "sasl_ssl".into())));
        assert!(settings.contains(&("sasl.mechanism", "SCRAM-SHA-512".into())));
        assert!(settings.contains(&("sasl.password", "hunter2".into())));
        let summary = config.summary();
        assert_eq!(summary, "SASL_SSL SCRAM-SHA-512 as \"eddy\"");
        std::fs::remove_file(&password).unwrap();
    }

    #[test]
    fn a_missing_variable_or_file_is_named_and_its_value_never_shown() {
        let config = parse(
            "protocol = \"sasl_ssl\"\nmechanism = \"PLAIN\"\nusername = \"key\"\n\
             password_env = \"EDDY_TEST_SURELY_UNSET_VARIABLE\"\n\
             ca_file = \"/nonexistent/ca.pem\"\n",
        );
        let problems = config.resolve().expect_err("problems");
        let all = problems.join("\n");
        assert!(
            all.contains("EDDY_TEST_SURELY_UNSET_VARIABLE, which is not set"),
            "{all}"
        );
        assert!(
            all.contains("ca_file: /nonexistent/ca.pem cannot be read"),
            "{all}"
        );
    }

    #[test]
    fn an_unsecured_token_names_its_principal_and_a_file_token_is_read_for_its_claims() {
        let config = parse(
            "protocol = \"sasl_ssl\"\nmechanism = \"OAUTHBEARER\"\n\
             oauthbearer_principal = \"eddy\"\n",
        );
        let unsecured = config
            .token_source()
            .expect("a source")
            .token()
            .expect("a token");
        assert_eq!(unsecured.principal, "eddy");
        assert!(
            unsecured.token.ends_with('.'),
            "no signature: {}",
            unsecured.token
        );
        // That token, from a file, is read back for its claims.
        let path = std::env::temp_dir().join(format!("eddy-token-test-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", unsecured.token)).unwrap();
        let from_file = TokenSource::File(path.clone()).token().expect("a token");
        assert_eq!(from_file, unsecured);
        std::fs::write(&path, "not a jwt").unwrap();
        let refused = TokenSource::File(path.clone()).token().unwrap_err();
        assert!(refused.contains("not a JWT"), "{refused}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        let cases = [
            ("protocol = \"sasl_ssl\"\n", "needs a mechanism"),
            ("mechanism = \"PLAIN\"\n", "has no SASL"),
            ("protocol = \"tls\"\n", "use one of"),
            (
                "protocol = \"sasl_ssl\"\nmechanism = \"GSSAPI\"\n",
                "mechanism is \"GSSAPI\"",
            ),
            (
                "protocol = \"sasl_ssl\"\nmechanism = \"PLAIN\"\nusername = \"u\"\n",
                "needs password_env or password_file",
            ),
            (
                "protocol = \"ssl\"\nkey_file = \"/etc/hostname\"\n",
                "needs both",
            ),
            (
                "protocol = \"sasl_ssl\"\nmechanism = \"OAUTHBEARER\"\n",
                "needs one of oauthbearer_token_env",
            ),
            (
                "protocol = \"sasl_ssl\"\nmechanism = \"OAUTHBEARER\"\n\
                 oauthbearer_token_env = \"EDDY_TEST_SURELY_UNSET_TOKEN\"\n",
                "EDDY_TEST_SURELY_UNSET_TOKEN, which is not set",
            ),
        ];
        for (text, expected) in cases {
            let problems = parse(text).resolve().expect_err(text).join("\n");
            assert!(problems.contains(expected), "{text}: {problems}");
        }
        assert!(toml::from_str::<SecurityConfig>("password = \"inline\"\n").is_err());
    }
}
