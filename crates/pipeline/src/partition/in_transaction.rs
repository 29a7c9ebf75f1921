//! A record's effects written into the open transaction (exactly-once
//! delivery), for [`super::Worker`]: what it published, or its dead letters,
//! and what a record's next pass does differently after an abort.

use rdkafka::message::OwnedMessage;

use crate::dead_letter;
use crate::retry::{self, Effect};
use crate::snapshot::Snapshot;
use eddy_kafka::produce::{self, NotTaken, Refused};
use eddy_kafka::transaction::{InTransaction, Poison, Position, Written};

/// Writes `effects` into the transaction `held`, keeping the answers in
/// `written`.
pub(super) async fn write_effects(
    held: &InTransaction<'_>,
    record: &OwnedMessage,
    effects: Vec<Effect>,
    omit: u32,
    written: &mut Written,
    snapshot: &Snapshot,
) -> Result<(), Spoilt> {
    let (producer, token) = (&held.producer(), held.token());
    for effect in effects {
        let (topic, error, attempts) = match effect {
            Effect::FollowUps {
                plugin,
                follow_ups,
                attempts,
            } => {
                let sent = &mut written.follow_ups;
                match produce::produce(producer, token, record, &plugin.id, follow_ups, sent).await
                {
                    Ok(()) => continue,
                    Err(NotTaken::Cancelled) => return Err(Spoilt::Stopped),
                    Err(NotTaken::Broken(reason)) => return Err(Spoilt::Producer(reason)),
                    // Refused as it was handed over: a dead letter
                    // instead, in the same transaction.
                    Err(NotTaken::Refused(refused)) => {
                        let (topic, error) = retry::refused_dead_letter(record, snapshot, refused);
                        (topic, error, attempts)
                    }
                }
            }
            Effect::DeadLetter {
                topic,
                error,
                attempts,
            } => (topic, error, attempts),
        };
        let mut refused = false;
        let durability = dead_letter::Durability::InTransaction {
            answers: &mut written.dead_letters,
            omit,
            refused: &mut refused,
        };
        let written = dead_letter::write(
            producer, token, record, &topic, &error, attempts, durability,
        )
        .await;
        if written.is_err() {
            // Only a dead letter Kafka refused is this record's to remember.
            return Err(if refused {
                Spoilt::DeadLetter(topic)
            } else if token.is_cancelled() {
                Spoilt::Stopped
            } else {
                Spoilt::Producer("the dead letter could not join the transaction".to_string())
            });
        }
    }
    Ok(())
}

/// Why a record's effects could not all be written into the transaction.
pub(super) enum Spoilt {
    /// Transactions failed meanwhile.
    Stopped,
    /// The producer takes nothing more into this transaction.
    Producer(String),
    /// The dead letter to this topic could not join the transaction.
    DeadLetter(String),
}

impl Spoilt {
    /// What the record's next pass is to know.
    pub(super) fn poison(&self, at: Position) -> Option<(Position, Poison)> {
        match self {
            Spoilt::DeadLetter(_) => Some((
                at,
                // Refused for a reason other than its size: one too large
                // was made smaller and sent again at once.
                Poison {
                    refused: None,
                    dead_letter_failures: 1,
                    dead_letter_too_large: 0,
                },
            )),
            Spoilt::Stopped | Spoilt::Producer(_) => None,
        }
    }
}

impl std::fmt::Display for Spoilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spoilt::Stopped => write!(f, "transactions stopped"),
            Spoilt::Producer(reason) => {
                write!(f, "a follow-up could not join the transaction: {reason}")
            }
            Spoilt::DeadLetter(topic) => {
                write!(f, "a dead letter to {topic} could not join the transaction")
            }
        }
    }
}

/// Replaces the follow-ups of the plugin `refused` names by its dead
/// letter: the broker refused one of them for good when this record was
/// handled before.
pub(super) fn dead_letter_instead(
    effects: &mut [Effect],
    record: &OwnedMessage,
    snapshot: &Snapshot,
    refused: Refused,
) {
    let Some(effect) = effects.iter_mut().find(
        |effect| matches!(effect, Effect::FollowUps { plugin, .. } if plugin.name() == refused.plugin),
    ) else {
        return;
    };
    let Effect::FollowUps { attempts, .. } = *effect else {
        return;
    };
    let (topic, error) = retry::refused_dead_letter(record, snapshot, refused);
    *effect = Effect::DeadLetter {
        topic,
        error,
        attempts,
    };
}
