//! The consumer's context: librdkafka's callbacks. It observes (errors,
//! statistics, OAuth tokens) and, on a rebalance, has the pipeline act:
//! the workers of revoked partitions stop and their finished work is
//! committed before the partitions move.

use std::error::Error;
use std::sync::Arc;

use eddy_core::config::security::TokenSource;
use eddy_core::metrics;
use eddy_kafka::client::{KafkaErrors, commit, oauth_token};
use eddy_kafka::transaction::Transactions;
use rdkafka::TopicPartitionList;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::partition::Workers;

/// librdkafka callbacks: statistics become the consumer-lag gauges; an
/// assign hands partitions to the workers, a revoke stops their workers and
/// commits their finished work before they move (in the open transaction,
/// with exactly-once delivery).
pub struct EddyContext {
    pub workers: Arc<Workers>,
    pub transactions: Option<Arc<Transactions>>,
    pub errors: Arc<KafkaErrors>,
    pub token: Option<TokenSource>,
}

impl ClientContext for EddyContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, Some(reason));
    }

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        oauth_token(self.token.as_ref())
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Behind what eddy finished; before anything is stored, behind
                // the committed offset.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if *partition >= 0 && p.desired && lag >= 0 {
                    metrics::consumer_lag(topic, *partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for EddyContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = partitions_of(list);
                self.workers.revoke(&partitions);
                match &self.transactions {
                    Some(transactions) => transactions
                        .commit_blocking(consumer.group_metadata(), "before giving up partitions"),
                    None => commit(consumer, "before giving up partitions"),
                }
                tracing::info!(?partitions, "partitions revoked; finished work committed");
            }
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                self.workers.assign(&partitions);
                tracing::info!(?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::error!("rebalance failed: {e}"),
        }
    }
}

/// The (topic, partition) pairs of a rebalance's list.
fn partitions_of(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}
