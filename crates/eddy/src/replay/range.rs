//! Where a replay starts and ends in each partition: `--from` and `--to` as
//! offsets (one for every partition, or `partition:offset,…`) or as times
//! (RFC 3339, found with `offsets_for_times`), or `--since` a duration ago.
//! The end is exclusive; without `--to` it is the partition's end when the
//! replay was planned, so a replay always ends.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A bound as the user wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// The same offset in every partition.
    Offset(i64),
    /// An offset per partition; partitions not named are not bounded.
    Offsets(BTreeMap<i32, i64>),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl Bound {
    /// `1200`, `0:1200,1:900` or `2026-11-27T09:00:00Z`.
    pub fn parse(text: &str) -> anyhow::Result<Bound> {
        let text = text.trim();
        if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(Bound::Time(
                (time.unix_timestamp_nanos() / 1_000_000) as i64,
            ));
        }
        if let Ok(offset) = text.parse::<i64>() {
            if offset < 0 {
                bail!("{text:?}: an offset is 0 or more");
            }
            return Ok(Bound::Offset(offset));
        }
        let mut offsets = BTreeMap::new();
        for part in text.split(',') {
            let parsed = part.split_once(':').and_then(|(p, o)| {
                Some((p.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
            });
            match parsed {
                Some((partition, offset)) if partition >= 0 && offset >= 0 => {
                    offsets.insert(partition, offset);
                }
                _ => bail!(
                    "{text:?} is not an offset (1200), offsets per partition (0:1200,1:900) \
                     or an RFC 3339 time (2026-11-27T09:00:00Z)"
                ),
            }
        }
        Ok(Bound::Offsets(offsets))
    }

    /// `--since 30m`: the time that long ago. Units s, m, h, d.
    pub fn since(text: &str, now_ms: i64) -> anyhow::Result<Bound> {
        let text = text.trim();
        let (number, unit) = text.split_at(text.len().saturating_sub(1));
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => 0,
        };
        match number.parse::<i64>() {
            Ok(n) if n > 0 && seconds > 0 => Ok(Bound::Time(now_ms - n * seconds * 1000)),
            _ => bail!("--since {text:?}: write a duration such as 90s, 30m, 2h or 1d"),
        }
    }
}

/// One partition's part of a replay: offsets `start..end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub partition: i32,
    /// The first offset the partition still holds, and its end.
    pub low: i64,
    pub high: i64,
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub fn len(&self) -> i64 {
        (self.end - self.start).max(0)
    }
}

/// The spans of `partitions` of `topic` that `from` and `to` bound.
pub fn resolve<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    from: Option<&Bound>,
    to: Option<&Bound>,
) -> anyhow::Result<Vec<Span>> {
    let from = offsets_of(consumer, topic, partitions, from)?;
    let to = offsets_of(consumer, topic, partitions, to)?;
    let mut spans = Vec::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .with_context(|| format!("cannot read the offsets of {topic} partition {partition}"))?;
        let start = match from.get(&partition) {
            Some(&Some(offset)) if offset < low => bail!(
                "{topic} partition {partition} starts at offset {low} now: the records before \
                 it were deleted by retention; replay from {low} (or a later time)"
            ),
            Some(&Some(offset)) => offset.min(high),
            Some(&None) => high,
            None => low,
        };
        let end = match to.get(&partition) {
            Some(&Some(offset)) => offset.clamp(low, high),
            Some(&None) | None => high,
        };
        spans.push(Span {
            partition,
            low,
            high,
            start,
            end: end.max(start),
        });
    }
    Ok(spans)
}

/// The offset each partition's bound names: `Some(None)` for a time after
/// the partition's last record; partitions a bound does not name are left
/// out.
fn offsets_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    bound: Option<&Bound>,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    let Some(bound) = bound else {
        return Ok(BTreeMap::new());
    };
    Ok(match bound {
        Bound::Offset(offset) => partitions.iter().map(|&p| (p, Some(*offset))).collect(),
        Bound::Offsets(offsets) => {
            if let Some(unknown) = offsets.keys().find(|p| !partitions.contains(p)) {
                bail!(
                    "{topic} has no partition {unknown} (it has {})",
                    partitions.len()
                );
            }
            offsets.iter().map(|(&p, &o)| (p, Some(o))).collect()
        }
        Bound::Time(ms) => {
            let mut asked = TopicPartitionList::new();
            for &partition in partitions {
                asked.add_partition_offset(topic, partition, Offset::Offset(*ms))?;
            }
            let found = consumer
                .offsets_for_times(asked, TIMEOUT)
                .with_context(|| format!("cannot find offsets by time in {topic}"))?;
            partitions
                .iter()
                .map(|&p| {
                    let offset = match found.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(offset)) => Some(offset),
                        _ => None,
                    };
                    (p, offset)
                })
                .collect()
        }
    })
}

/// An RFC 3339 text of `ms` since the epoch, for messages.
pub fn time_text(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_as_offsets_partitions_and_times() {
        assert_eq!(Bound::parse("1200").unwrap(), Bound::Offset(1200));
        assert_eq!(
            Bound::parse("0:1200, 1:900").unwrap(),
            Bound::Offsets(BTreeMap::from([(0, 1200), (1, 900)]))
        );
        assert_eq!(
            Bound::parse("2026-11-27T09:00:00Z").unwrap(),
            Bound::Time(1_795_770_000_000)
        );
        assert_eq!(time_text(1_795_770_000_000), "2026-11-27T09:00:00Z");
        for bad in ["-1", "0:", "a:1", "yesterday", "1:-5"] {
            assert!(Bound::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_counts_back_from_now() {
        let now = 10_000_000;
        assert_eq!(
            Bound::since("30m", now).unwrap(),
            Bound::Time(now - 1_800_000)
        );
        assert_eq!(
            Bound::since("2h", now).unwrap(),
            Bound::Time(now - 7_200_000)
        );
        for bad in ["30", "m", "0s", "-5m", "3w"] {
            assert!(Bound::since(bad, now).is_err(), "{bad}");
        }
    }
}
