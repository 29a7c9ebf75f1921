//! The in-flight ledger of one partition: which offset may be stored.
//!
//! Records enter in offset order, as the worker takes them, and complete in
//! any order: a record completes when its follow-ups are acknowledged, its
//! dead letter is acknowledged, or it needed nothing (no route, nothing
//! published). The ledger answers one question: the offset to store next,
//! one past the newest record that completed with every record before it.
//! That offset never passes an unfinished record and never goes backwards.
//!
//! There is no Kafka here: the worker feeds the ledger and stores what it
//! says, so the rule is tested on its own (unit and property tests below).

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Ledger {
    /// Records entered and not yet passed, oldest first: (offset, bytes,
    /// completed).
    open: VecDeque<(i64, usize, bool)>,
    /// Bytes of the records completed since [`Ledger::take_released`].
    released: usize,
    /// The newest offset entered, so entries are checked to be in order.
    newest: Option<i64>,
    /// One past the newest record passed: the offset to store.
    passed: Option<i64>,
    /// What [`Ledger::next_to_store`] last returned.
    given: Option<i64>,
}

impl Ledger {
    /// A record taken at `offset`. Offsets of a partition only grow (they
    /// may skip numbers: compaction, transaction markers); an entry that is
    /// not after the last one is refused and `false` is returned.
    pub fn enter(&mut self, offset: i64) -> bool {
        self.enter_sized(offset, 0)
    }

    /// [`Ledger::enter`] of a record that costs `bytes` while held: given
    /// back by [`Ledger::take_released`] once it completes.
    pub fn enter_sized(&mut self, offset: i64, bytes: usize) -> bool {
        if self.newest.is_some_and(|newest| offset <= newest) {
            return false;
        }
        self.newest = Some(offset);
        self.open.push_back((offset, bytes, false));
        true
    }

    /// The record at `offset` is finished. `false` if it was never entered
    /// or was passed already.
    pub fn complete(&mut self, offset: i64) -> bool {
        let Ok(at) = self.open.binary_search_by_key(&offset, |(o, _, _)| *o) else {
            return false;
        };
        let (_, bytes, completed) = &mut self.open[at];
        if !*completed {
            *completed = true;
            self.released += *bytes;
        }
        while let Some(&(oldest, _, true)) = self.open.front() {
            self.passed = Some(oldest + 1);
            self.open.pop_front();
        }
        true
    }

    /// The offset to store (the next one to read), if it moved since the
    /// last call.
    pub fn next_to_store(&mut self) -> Option<i64> {
        if self.passed == self.given {
            return None;
        }
        self.given = self.passed;
        self.passed
    }

    /// Records entered and not yet passed.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Bytes of the records completed since the last call.
    pub fn take_released(&mut self) -> usize {
        std::mem::take(&mut self.released)
    }

    /// Bytes of the records entered and not completed.
    pub fn unfinished_bytes(&self) -> usize {
        self.open
            .iter()
            .filter(|(_, _, completed)| !completed)
            .map(|(_, bytes, _)| bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn nothing_to_store_until_the_oldest_completes() {
        let mut ledger = Ledger::default();
        for offset in [10, 11, 12] {
            assert!(ledger.enter(offset));
        }
        assert_eq!(ledger.next_to_store(), None);
        ledger.complete(12);
        ledger.complete(11);
        assert_eq!(ledger.next_to_store(), None, "10 is still in flight");
        ledger.complete(10);
        assert_eq!(ledger.next_to_store(), Some(13));
        assert_eq!(ledger.next_to_store(), None, "said once");
        assert_eq!(ledger.open(), 0);
    }

    #[test]
    fn what_a_record_costs_is_released_when_it_completes_not_when_it_is_passed() {
        let mut ledger = Ledger::default();
        assert!(ledger.enter_sized(1, 100));
        assert!(ledger.enter_sized(2, 20));
        assert_eq!(ledger.unfinished_bytes(), 120);
        ledger.complete(2);
        assert_eq!(ledger.take_released(), 20, "done, though 1 is not");
        assert_eq!(ledger.take_released(), 0, "given once");
        ledger.complete(2);
        assert_eq!(ledger.take_released(), 0, "completed twice, released once");
        assert_eq!(ledger.unfinished_bytes(), 100);
        ledger.complete(1);
        assert_eq!(ledger.take_released(), 100);
        assert_eq!(ledger.unfinished_bytes(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_passed_over() {
        let mut ledger = Ledger::default();
        for offset in [3, 7, 20] {
            ledger.enter(offset);
        }
        ledger.complete(3);
        assert_eq!(ledger.next_to_store(), Some(4));
        ledger.complete(7);
        assert_eq!(ledger.next_to_store(), Some(8));
        ledger.complete(20);
        assert_eq!(ledger.next_to_store(), Some(21));
    }

    #[test]
    fn entries_out_of_order_and_unknown_completions_are_refused() {
        let mut ledger = Ledger::default();
        assert!(ledger.enter(5));
        assert!(!ledger.enter(5));
        assert!(!ledger.enter(4));
        assert!(!ledger.complete(6), "never entered");
        assert!(ledger.complete(5));
        assert!(!ledger.complete(5), "passed already");
        assert_eq!(ledger.next_to_store(), Some(6));
    }

    /// Records at increasing offsets (gaps of 1 to 3), and an order in
    /// which they complete.
    fn records_and_order() -> impl Strategy<Value = (Vec<i64>, Vec<usize>)> {
        (1usize..200).prop_flat_map(|n| {
            let offsets = proptest::collection::vec(1i64..4, n).prop_map(|gaps| {
                gaps.iter()
                    .scan(0i64, |at, gap| {
                        *at += gap;
                        Some(*at)
                    })
                    .collect::<Vec<i64>>()
            });
            let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            (offsets, order)
        })
    }

    proptest! {
        #[test]
        fn the_stored_offset_never_passes_an_unfinished_record_nor_goes_back(
            (offsets, order) in records_and_order(),
            entered_up_front in 0usize..200,
        ) {
            let mut ledger = Ledger::default();
            let mut done = vec![false; offsets.len()];
            let mut entered = 0;
            let mut last_stored: Option<i64> = None;
            // Records enter in order, some before any completes and the
            // rest as completions go on: a record completes only once entered.
            let mut pending = order.into_iter().peekable();
            while let Some(&index) = pending.peek() {
                if entered <= index || entered < entered_up_front.min(offsets.len()) {
                    prop_assert!(ledger.enter(offsets[entered]));
                    entered += 1;
                    continue;
                }
                pending.next();
                prop_assert!(ledger.complete(offsets[index]));
                done[index] = true;
                if let Some(stored) = ledger.next_to_store() {
                    prop_assert!(last_stored.is_none_or(|last| stored > last), "went back");
                    // Every record below it is finished; the first one at or
                    // above it is not.
                    for (i, &offset) in offsets[..entered].iter().enumerate() {
                        if offset < stored {
                            prop_assert!(done[i], "passed unfinished offset {offset}");
                        }
                    }
                    let first_open = (0..entered).find(|&i| !done[i]);
                    if let Some(i) = first_open {
                        prop_assert!(offsets[i] >= stored);
                    }
                    last_stored = Some(stored);
                }
            }
            prop_assert_eq!(ledger.open(), 0);
            prop_assert_eq!(last_stored, offsets.last().map(|o| o + 1));
        }
    }
}
