//! Priority lanes with bounded starvation: ten FIFO lanes (priority 0–9),
//! highest first, except that after a run of [`FAIRNESS_STREAK`] items from
//! the top lane while lower ones wait, one item comes from a lower lane, the
//! lower lanes taking turns. A waiting item is therefore passed over at most
//! about `FAIRNESS_STREAK + 1` times for each non-empty lane below the top.
//! The rule does not depend on arrival order, which a broker consumer cannot
//! see (RabbitMQ sends what it holds already sorted by priority).
//!
//! Used by the in-memory queue, and by broker transports to order what their
//! consumer has received but not yet handed to the pipeline.

use std::collections::VecDeque;

/// Highest priority wharf accepts; higher values are clamped for ordering
/// (the pipeline rejects them as invalid input anyway).
pub(crate) const MAX_PRIORITY: usize = 9;

/// After this many consecutive items from the top lane while a lower lane
/// had items waiting, a lower lane gets a turn.
pub(crate) const FAIRNESS_STREAK: u32 = 8;

/// Items in priority lanes.
pub(crate) struct Lanes<T> {
    lanes: Vec<VecDeque<T>>,
    streak: u32,
    /// The lower lane that had the last turn; the next turn goes to the next
    /// non-empty lane below it (wrapping round).
    last_turn: usize,
    len: usize,
}

impl<T> Lanes<T> {
    /// Ten lanes when `priority`, one otherwise.
    pub(crate) fn new(priority: bool) -> Self {
        let count = if priority { MAX_PRIORITY + 1 } else { 1 };
        Lanes {
            lanes: (0..count).map(|_| VecDeque::new()).collect(),
            streak: 0,
            last_turn: MAX_PRIORITY + 1,
            len: 0,
        }
    }

    fn has_priority(&self) -> bool {
        self.lanes.len() > 1
    }

    /// Turns single-lane into priority lanes, re-sorting what waits.
    pub(crate) fn enable_priority(&mut self, priority_of: impl Fn(&T) -> Option<u8>) {
        if self.has_priority() {
            return;
        }
        let waiting: Vec<T> = self.lanes.drain(..).flatten().collect();
        self.lanes = (0..=MAX_PRIORITY).map(|_| VecDeque::new()).collect();
        for item in waiting {
            let lane = self.lane_of(priority_of(&item));
            self.lanes[lane].push_back(item);
        }
    }

    fn lane_of(&self, priority: Option<u8>) -> usize {
        if self.has_priority() {
            usize::from(priority.unwrap_or(0)).min(MAX_PRIORITY)
        } else {
            0
        }
    }

    /// Whether nothing waits in the lane of `priority`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))] // only the NATS consumer asks
    pub(crate) fn lane_is_empty(&self, priority: Option<u8>) -> bool {
        self.lanes[self.lane_of(priority)].is_empty()
    }

    /// A new arrival, at the back of its lane.
    pub(crate) fn push(&mut self, priority: Option<u8>, item: T) {
        let lane = self.lane_of(priority);
        self.lanes[lane].push_back(item);
        self.len += 1;
    }

    /// An item taken earlier, back at the head of its lane.
    pub(crate) fn push_front(&mut self, priority: Option<u8>, item: T) {
        let lane = self.lane_of(priority);
        self.lanes[lane].push_front(item);
        self.len += 1;
    }

    /// The next item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let top = self.lanes.iter().rposition(|l| !l.is_empty())?;
        let lower_waiting = self.lanes[..top].iter().any(|l| !l.is_empty());
        let lane = if lower_waiting {
            self.streak += 1;
            if self.streak > FAIRNESS_STREAK {
                self.streak = 0;
                self.lower_turn(top)
            } else {
                top
            }
        } else {
            self.streak = 0;
            top
        };
        let item = self.lanes[lane].pop_front()?;
        self.len -= 1;
        Some(item)
    }

    /// The lower lane whose turn it is: the next non-empty one below the
    /// last lane that had a turn, wrapping round to the highest below `top`.
    fn lower_turn(&mut self, top: usize) -> usize {
        let waiting = |lane: &usize| !self.lanes[*lane].is_empty();
        let lane = (0..top.min(self.last_turn))
            .rev()
            .find(waiting)
            .or_else(|| (0..top).rev().find(waiting))
            .unwrap_or(top);
        self.last_turn = lane;
        lane
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes everything.
    #[cfg_attr(not(any(feature = "amqp", feature = "nats")), allow(dead_code))]
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.len = 0;
        self.lanes.iter_mut().flat_map(|l| l.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_and_low_priority_not_starved() {
        let mut lanes = Lanes::new(true);
        lanes.push(Some(1), 1u8);
        for _ in 0..100 {
            lanes.push(Some(9), 9);
        }
        let order: Vec<u8> = std::iter::from_fn(|| lanes.pop()).collect();
        assert_eq!(order.len(), 101);
        assert_eq!(order[0], 9, "highest priority first");
        let low_at = order.iter().position(|&p| p == 1).unwrap();
        assert!(order[..low_at].iter().all(|&p| p == 9));
        assert!(
            low_at <= FAIRNESS_STREAK as usize,
            "low priority waited {low_at} deliveries"
        );
    }

    #[test]
    fn lower_lanes_take_turns_whatever_their_arrival() {
        // As a RabbitMQ consumer receives them: highest first, lowest last.
        let mut lanes = Lanes::new(true);
        for _ in 0..40 {
            lanes.push(Some(9), 9u8);
        }
        for p in [5, 5, 5, 1] {
            lanes.push(Some(p), p);
        }
        let order: Vec<u8> = std::iter::from_fn(|| lanes.pop()).collect();
        let first = |p: u8| order.iter().position(|&x| x == p).unwrap();
        assert!(first(5) <= 9, "{order:?}");
        assert!(first(1) <= 19, "the lowest lane gets the next turn: {order:?}");
    }

    #[test]
    fn single_lane_is_fifo_and_returned_items_go_first() {
        let mut lanes = Lanes::new(false);
        lanes.push(Some(9), "a");
        lanes.push(Some(1), "b");
        let first = lanes.pop().unwrap();
        assert_eq!(first, "a");
        lanes.push_front(Some(9), first);
        assert_eq!(lanes.pop().unwrap(), "a");
        lanes.enable_priority(|_| Some(0));
        assert_eq!(lanes.len(), 1);
        assert_eq!(lanes.drain(), vec!["b"]);
    }
}
