//! The broker window, bounded in bytes. RabbitMQ counts its prefetch in messages, but a message
//! holds anything from one event (light load) to `PUBLISH_MAX_EVENTS` (a burst of batch
//! requests), so a window of `WORKER_PREFETCH` messages that keeps single-event traffic flowing
//! lets batch traffic pile tens of MB of deliveries into the worker, and in the worst case
//! (1,024 messages of 500 events) half a gigabyte. [`Window`] turns the byte budget
//! (`WORKER_PREFETCH_BYTES`) into a message count from the sizes actually seen, at most
//! `WORKER_PREFETCH`; the consumer applies a new count by starting a new consumer with it (RabbitMQ
//! fixes a consumer's prefetch when it starts). While messages are small the count is
//! `WORKER_PREFETCH`, and a steady stream changes nothing.

/// How the window follows message sizes. Pure: the consumer feeds it each batch's deliveries and
/// changes its prefetch when [`Window::update`] says so.
#[derive(Debug, Clone)]
pub struct Window {
    budget_bytes: usize,
    /// The per-consumer prefetch: the window never exceeds it.
    max: u16,
    /// The least window: every batch in hand may hold at least a few messages.
    floor: u16,
    /// Mean bytes per message, moving (each batch weighs `WEIGHT`).
    mean_bytes: Option<f64>,
    /// The prefetch in force.
    current: u16,
}

/// Weight of the newest batch in the moving mean.
const WEIGHT: f64 = 0.3;
/// The window changes only when the new count differs from the one in force by more than this
/// share, so a steady stream does not restart its consumer after every batch.
const SLACK: f64 = 0.25;

impl Window {
    /// A window for `batches_in_hand` batches (those committing and the one being gathered).
    /// It starts at `floor × 4` messages, until the first batch shows what messages weigh: a
    /// reconnect to a queue full of huge messages must not start by taking `max` of them.
    pub fn new(budget_bytes: usize, max: u16, batches_in_hand: usize) -> Self {
        let floor = u16::try_from(batches_in_hand.saturating_mul(2))
            .unwrap_or(u16::MAX)
            .clamp(1, max.max(1));
        Self {
            budget_bytes,
            max: max.max(1),
            floor,
            mean_bytes: None,
            current: floor.saturating_mul(4).min(max.max(1)),
        }
    }

    /// Messages the broker may have out to this consumer now.
    pub fn messages(&self) -> u16 {
        self.current
    }

    /// Records one batch: `messages` deliveries of `bytes` in all.
    pub fn observe(&mut self, messages: usize, bytes: usize) {
        if messages == 0 {
            return;
        }
        let batch_mean = bytes as f64 / messages as f64;
        self.mean_bytes = Some(match self.mean_bytes {
            None => batch_mean,
            Some(mean) => mean + WEIGHT * (batch_mean - mean),
        });
    }

    /// The prefetch the budget calls for at the sizes seen.
    fn wanted(&self) -> u16 {
        let Some(mean) = self.mean_bytes else {
            return self.current;
        };
        let fits = (self.budget_bytes as f64 / mean.max(1.0)).floor();
        if fits >= f64::from(self.max) {
            self.max
        } else {
            (fits as u16).max(self.floor)
        }
    }

    /// The new prefetch, when it differs enough from the one in force (or reaches `max`).
    pub fn update(&mut self) -> Option<u16> {
        let wanted = self.wanted();
        let (a, b) = (f64::from(self.current), f64::from(wanted));
        let changed = wanted != self.current && ((a - b).abs() / a > SLACK || wanted == self.max);
        changed.then(|| {
            self.current = wanted;
            wanted
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn starts_small_until_sizes_are_known() {
        let w = Window::new(24 * MIB, 1024, 3);
        assert_eq!(w.messages(), 24);
    }

    #[test]
    fn small_messages_use_the_whole_prefetch() {
        let mut w = Window::new(24 * MIB, 1024, 3);
        // Single-event traffic: ~5 events of ~1.1 KB per message.
        w.observe(400, 400 * 5_500);
        assert_eq!(w.update(), Some(1024));
        assert_eq!(w.messages(), 1024);
        w.observe(400, 400 * 5_000);
        assert_eq!(w.update(), None, "nothing to change");
    }

    #[test]
    fn large_messages_shrink_the_window_to_the_budget() {
        let mut w = Window::new(24 * MIB, 1024, 3);
        w.observe(400, 400 * 5_500);
        w.update();
        // Batch requests: ~45 events per message, ~48 KB.
        for _ in 0..20 {
            w.observe(45, 45 * 48_000);
            w.update();
        }
        let n = usize::from(w.messages());
        assert!(n * 48_000 <= 24 * MIB * 13 / 10, "{n} messages");
        assert!(n * 48_000 >= 24 * MIB * 7 / 10, "{n} messages");
        // Huge messages: the floor still lets every batch in hand hold some.
        for _ in 0..20 {
            w.observe(4, 4 * 20 * MIB);
            w.update();
        }
        assert_eq!(w.messages(), 6);
    }

    #[test]
    fn a_steady_stream_sends_no_new_limit_after_each_batch() {
        let mut w = Window::new(24 * MIB, 1024, 3);
        w.observe(50, 50 * 50_000);
        assert!(w.update().is_some());
        let mut sent = 0;
        for i in 0..100 {
            // ±10 % around the same size.
            let size = if i % 2 == 0 { 45_000 } else { 55_000 };
            w.observe(50, 50 * size);
            sent += usize::from(w.update().is_some());
        }
        assert_eq!(sent, 0);
    }

    #[test]
    fn the_window_never_exceeds_the_prefetch_nor_goes_below_the_floor() {
        let mut w = Window::new(MIB, 64, 3);
        w.observe(10, 10);
        assert_eq!(w.update(), Some(64));
        assert_eq!(w.messages(), 64);
        w.observe(1, usize::MAX / 2);
        w.update();
        assert_eq!(w.messages(), 6);
    }
}
