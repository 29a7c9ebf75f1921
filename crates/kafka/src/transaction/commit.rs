//! Ending a transaction: commit (the staged offsets sent with the group's
//! metadata), or abort and ask for a rewind; and what a failed call means.

use std::time::Instant;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::Producer;

use super::caller::Stuck;
use super::*;

/// Why a commit failed, and whether it may be tried again from the last one.
pub(super) struct Failed {
    error: anyhow::Error,
    kind: FailedKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FailedKind {
    /// Aborted, the transaction's records are handled again.
    Abortable,
    /// The producer can do nothing more (fenced): eddy stops.
    Fatal,
    /// A call never returned: the producer is replaced, which aborts.
    Stuck,
}

impl Failed {
    fn abortable(error: anyhow::Error) -> Failed {
        Failed {
            error,
            kind: FailedKind::Abortable,
        }
    }
}

impl From<Stuck> for Failed {
    fn from(stuck: Stuck) -> Failed {
        Failed {
            error: anyhow::anyhow!(
                "{} has not returned in {STUCK_AFTER:?}: the Kafka client is stuck (librdkafka \
                 ignores this call's timeout when the group coordinator goes away, \
                 confluentinc/librdkafka#5456)",
                stuck.what
            ),
            kind: FailedKind::Stuck,
        }
    }
}

impl Transactions {
    /// Commits, or aborts; gives back what the transaction held.
    pub(super) fn commit_held(
        &self,
        metadata: Option<ConsumerGroupMetadata>,
        when: &str,
    ) -> Staged {
        if self.failure().is_some() || self.is_rewinding() {
            return Staged::default();
        }
        let doomed = locked(&self.doomed).clone();
        let mut staged = std::mem::take(&mut *locked(&self.staged));
        if doomed.is_none() && staged.offsets.is_empty() {
            return staged;
        }
        let started = Instant::now();
        let committed = match doomed {
            Some(reason) => Err(Failed::abortable(anyhow::anyhow!(reason))),
            None => self.try_commit(&mut staged, metadata),
        };
        match committed {
            Ok(()) => {
                metrics::transaction("committed", started.elapsed());
                tracing::debug!(
                    records = staged.records,
                    partitions = staged.offsets.values().map(HashMap::len).sum::<usize>(),
                    "transaction committed {when}"
                );
                locked(&self.poisoned).retain(|(at, _)| {
                    let next = staged
                        .offsets
                        .get(&*at.topic)
                        .and_then(|partitions| partitions.get(&at.partition));
                    next.is_none_or(|next| at.offset >= *next)
                });
                let mut known = locked(&self.committed);
                for (topic, partitions) in &staged.offsets {
                    match known.get_mut(topic.as_str()) {
                        Some(known) => known.extend(partitions),
                        None => {
                            known.insert(topic.clone(), partitions.clone());
                        }
                    }
                }
                staged
            }
            Err(failed) => self.abort(staged, failed, when, started),
        }
    }

    /// Aborts the open transaction after `failed`, learns what its answers
    /// say about its records, and asks the fetch loop to rewind; or, if
    /// the producer can do nothing more, stops transactions. A producer
    /// stuck in a call (or in the abort) is replaced instead: the new one
    /// aborts what the stuck one left open.
    fn abort(&self, mut staged: Staged, failed: Failed, when: &str, started: Instant) -> Staged {
        let mut stuck = failed.kind == FailedKind::Stuck;
        let mut aborted = match failed.kind {
            FailedKind::Stuck => Ok(()),
            FailedKind::Abortable | FailedKind::Fatal => match self.abort_transaction() {
                Ok(aborted) => aborted.map_err(|e| format!("aborting it failed too ({e})")),
                Err(in_abort) => {
                    tracing::error!("{:#}", Failed::from(in_abort).error);
                    stuck = true;
                    Ok(())
                }
            },
        };
        if stuck && aborted.is_ok() {
            aborted = self
                .replace_producer()
                .map_err(|e| format!("the stuck producer could not be replaced ({e:#})"));
        }
        metrics::transaction("aborted", started.elapsed());
        let what = format!(
            "the transaction of {} records was aborted ({when}): {:#}",
            staged.records, failed.error
        );
        match aborted {
            Ok(()) if failed.kind != FailedKind::Fatal => {
                // A stuck producer's answers may never come.
                if !stuck {
                    let deadline = Instant::now() + ANSWERS_WAIT;
                    for written in &mut staged.written {
                        let poison = written.poison(deadline);
                        if poison.is_known() {
                            self.learn((written.at.clone(), poison));
                        }
                    }
                }
                self.rewinding.store(true, Ordering::Release);
                self.rewind.notify_one();
                let replaced = if stuck {
                    "; a new producer took the transactional.id, fencing the stuck one"
                } else {
                    ""
                };
                tracing::warn!(
                    "{what}{replaced}; nothing of it is visible, and its records are handled \
                     again from the last commit"
                );
            }
            Ok(()) => self.fail(format!(
                "{what}; eddy stops, and a restart handles those records again from the \
                 committed offsets"
            )),
            Err(e) => self.fail(format!(
                "{what}; {e}; eddy stops, and a restart handles those records again from \
                 the committed offsets"
            )),
        }
        staged
    }

    /// Aborts the open transaction, again after a retriable error.
    fn abort_transaction(&self) -> Result<KafkaResult<()>, Stuck> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call("abort_transaction", |p| p.abort_transaction(CALL_WAIT))? {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < COMMIT_TRIES => {
                    tracing::warn!("aborting the transaction, again: {e}");
                }
                aborted => return Ok(aborted),
            }
        }
    }

    fn try_commit(
        &self,
        staged: &mut Staged,
        metadata: Option<ConsumerGroupMetadata>,
    ) -> Result<(), Failed> {
        self.flush(staged)?;
        let metadata = metadata.ok_or_else(|| {
            Failed::abortable(anyhow::anyhow!("the consumer has no group metadata yet"))
        })?;
        let mut offsets = TopicPartitionList::new();
        for (topic, partitions) in &staged.offsets {
            for (partition, next) in partitions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| self.explained(e))?;
            }
        }
        let sent = self.call("send_offsets_to_transaction", move |p| {
            p.send_offsets_to_transaction(&offsets, &metadata, CALL_WAIT)
        })?;
        sent.map_err(|e| self.explained(e))?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call("commit_transaction", |p| p.commit_transaction(CALL_WAIT))? {
                Ok(()) => break,
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < COMMIT_TRIES => {
                    tracing::warn!("committing the transaction, again: {e}");
                }
                Err(e) => return Err(self.explained(e)),
            }
        }
        self.producer()
            .begin_transaction()
            .map_err(|e| self.explained(e))?;
        Ok(())
    }

    /// Waits until Kafka has answered for every record of the transaction:
    /// what committing does first. A record the broker refused meanwhile
    /// spoils the transaction, and librdkafka would then wait the whole
    /// [`CALL_WAIT`] for records it holds back: so it is looked for while
    /// waiting, and ends the wait.
    fn flush(&self, staged: &mut Staged) -> Result<(), Failed> {
        let started = Instant::now();
        let deadline = started + CALL_WAIT;
        let mut say = started + GATE_SAY;
        let producer = self.producer();
        loop {
            if Instant::now() >= say {
                say += GATE_SAY;
                tracing::warn!(
                    "a commit has waited {:?} for the brokers to take the transaction's records",
                    started.elapsed()
                );
            }
            match producer.flush(FLUSH_STEP) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(self.explained(e)),
                Err(_) => {}
            }
            let now = Instant::now();
            if let Some(poison) = staged
                .written
                .iter_mut()
                .map(|written| written.poison(now))
                .find(Poison::is_known)
            {
                return Err(Failed::abortable(anyhow::anyhow!("{}", poison.reason())));
            }
        }
    }

    /// `error`, said in the words of what it means for eddy.
    fn explained(&self, error: KafkaError) -> Failed {
        match &error {
            KafkaError::Transaction(e) if e.is_fatal() => Failed {
                error: anyhow::anyhow!(
                    "{error}: this producer was fenced: another eddy took over \
                     transactional.id {:?}; its work is theirs now",
                    self.id
                ),
                kind: FailedKind::Fatal,
            },
            _ => Failed::abortable(error.into()),
        }
    }
}
