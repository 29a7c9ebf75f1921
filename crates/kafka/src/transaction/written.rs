//! What a worker writes into the open transaction: a record's effects and
//! its partition's next offset, staged under the gate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::producer::DeliveryFuture;
use tokio::sync::RwLockReadGuard;
use tokio_util::sync::CancellationToken;

use super::{MAX_RECORDS, Transactions, locked};
use crate::client::EddyProducer;
use crate::produce::{self, Answer, Refused, Sent};

/// A record's place: topic, partition, offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// What an aborted transaction showed about one record's effects, so its
/// next pass writes something Kafka takes.
#[derive(Clone, Debug, Default)]
pub struct Poison {
    /// A follow-up the broker refused for good: the record is dead-lettered
    /// for its plugin instead, as in at-least-once mode.
    pub refused: Option<Refused>,
    /// Times its dead letter could not be written: the next is written
    /// after a pause that grows with them.
    pub dead_letter_failures: u32,
    /// Of those, the times the topic refused it as too large: the next is
    /// written with that many parts left out. A dead letter refused for
    /// another reason (no such topic, not allowed) is written whole.
    pub dead_letter_too_large: u32,
}

/// What one record wrote into the open transaction, kept until it ends:
/// if it is aborted, the answers say whether the record was the cause.
pub struct Written {
    pub at: Position,
    pub follow_ups: Vec<Sent>,
    /// The answers for its dead letters not answered yet.
    pub dead_letters: Vec<DeliveryFuture>,
    /// Its dead letters the broker refused.
    pub dead_letters_refused: u32,
    /// Of those, the ones refused as too large.
    pub dead_letters_too_large: u32,
}

impl Written {
    pub fn new(at: Position) -> Written {
        Written {
            at,
            follow_ups: Vec::new(),
            dead_letters: Vec::new(),
            dead_letters_refused: 0,
            dead_letters_too_large: 0,
        }
    }

    /// What Kafka's answers say about the record, waiting (blocking the
    /// thread) for them until `deadline`.
    pub(super) fn poison(&mut self, deadline: Instant) -> Poison {
        let refused = produce::refused_in_transaction(&mut self.follow_ups, deadline);
        let (mut failures, mut too_large) = (0, 0);
        self.dead_letters
            .retain_mut(|ack| match produce::answer(ack, deadline) {
                Answer::Waiting => true,
                Answer::Answered => false,
                Answer::Refused(code) => {
                    failures += 1;
                    too_large += u32::from(produce::too_large(code));
                    false
                }
            });
        self.dead_letters_refused += failures;
        self.dead_letters_too_large += too_large;
        Poison {
            refused,
            dead_letter_failures: self.dead_letters_refused,
            dead_letter_too_large: self.dead_letters_too_large,
        }
    }
}

impl Poison {
    pub(super) fn is_known(&self) -> bool {
        self.refused.is_some() || self.dead_letter_failures > 0
    }

    /// Why the transaction holding the record cannot commit.
    pub(super) fn reason(&self) -> String {
        match &self.refused {
            Some(refused) => refused.reason(),
            None => "a dead letter was refused".to_string(),
        }
    }
}

/// The right to write into the open transaction, while held.
pub struct InTransaction<'a> {
    pub(super) _gate: RwLockReadGuard<'a, ()>,
    pub(super) transactions: &'a Transactions,
}

impl InTransaction<'_> {
    /// The token for the waits of a write into the transaction. Once a
    /// record's first effect is in, a revoke or shutdown must not cut its
    /// write short: its offset would be missing from a transaction holding
    /// part of its effects. So only failed transactions stop it.
    pub fn token(&self) -> &CancellationToken {
        &self.transactions.broken
    }

    /// The producer to write into the transaction with.
    pub fn producer(&self) -> EddyProducer {
        self.transactions.producer()
    }

    /// Stages `next` as the offset of `topic`/`partition` to read next,
    /// `records` more records having finished, and what the last of them
    /// wrote: they commit together with what was written meanwhile.
    pub fn stage(&self, topic: &str, partition: i32, next: i64, records: usize, written: Written) {
        let mut staged = locked(&self.transactions.staged);
        match staged.offsets.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, next);
            }
            None => {
                staged
                    .offsets
                    .insert(topic.to_string(), HashMap::from([(partition, next)]));
            }
        }
        staged.records += records;
        if !written.follow_ups.is_empty() || !written.dead_letters.is_empty() {
            staged.written.push(written);
        }
        if staged.records >= MAX_RECORDS {
            self.transactions.full.notify_one();
        }
    }

    /// The open transaction cannot be committed (`reason`): the committer
    /// aborts it and eddy rewinds. `poison`, if given, is what the next pass
    /// of the record at its position is to know.
    pub fn doom(&self, reason: String, poison: Option<(Position, Poison)>) {
        let transactions = self.transactions;
        if let Some(poison) = poison {
            transactions.learn(poison);
        }
        locked(&transactions.doomed).get_or_insert(reason);
        transactions.full.notify_one();
    }
}
