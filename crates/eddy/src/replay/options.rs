//! What `eddy replay` was asked: where the events come from, where they
//! go, and what is taken; shared by planning and carrying out.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long a replay waits for a broker's answer.
pub(super) const TIMEOUT: Duration = Duration::from_secs(15);

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum Source {
    Topic(String),
    DeadLetters(String),
}

/// Where they go. `None`: as each dead letter says (its `eddy-plugin`, its
/// `eddy-original-topic`).
#[derive(Debug, Clone)]
pub enum Target {
    Plugin(Option<String>),
    Topic(Option<String>),
}

/// What `eddy replay` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub source: Source,
    pub from: Option<String>,
    pub to: Option<String>,
    pub since: Option<String>,
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub reason: Option<String>,
    pub plugin: Option<String>,
    pub target: Target,
    pub drop_headers: Vec<String>,
    pub group: Option<String>,
    /// Events per second, at most.
    pub rate: Option<f64>,
    pub execute: bool,
}

impl Options {
    /// The progress group: `--group`, or one named for these arguments.
    pub(super) fn group(&self) -> String {
        if let Some(group) = &self.group {
            return group.clone();
        }
        let mut described = self.clone();
        described.execute = false;
        described.rate = None;
        let digest = Sha256::digest(format!("{described:?}").as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("eddy-replay-{hex}")
    }

    pub(super) fn topic(&self) -> &str {
        match &self.source {
            Source::Topic(topic) | Source::DeadLetters(topic) => topic,
        }
    }

    pub(super) fn dead_letters(&self) -> bool {
        matches!(self.source, Source::DeadLetters(_))
    }
}
