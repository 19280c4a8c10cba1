//! Getting usage records from Envoy to the control plane, and none lost: a
//! bounded buffer of records (one delivery line each) that a batch leaves only once the
//! control plane has stored it. While the control plane is down or slow the
//! buffer holds what comes; past its bound the oldest records are dropped and
//! counted (a stat and a log line), never silently. Both shims run this: the
//! wasm filter's service with Envoy's HTTP calls, the module's thread with its
//! own client. Records carry ids, so a batch sent twice is stored once.

use std::collections::VecDeque;

/// Records kept at most while the control plane cannot take them (about 300
/// bytes each: some 60 MB).
pub const MAX_BUFFERED: usize = 200_000;
/// Records per delivery.
pub const BATCH: usize = 5_000;
/// A delivery goes when this many records wait, or [`SEND_AFTER_MS`] after
/// the last one went: a busy Envoy sends few large batches rather than one a
/// request, and a quiet one still delivers within about a second.
pub const SEND_AT: usize = 1_000;
pub const SEND_AFTER_MS: u64 = 1_000;

#[derive(Debug)]
pub struct RecordBuffer {
    lines: VecDeque<Vec<u8>>,
    capacity: usize,
    /// Records in the batch being delivered (the first ones of `lines`).
    in_flight: usize,
    /// Dropped since the last [`RecordBuffer::take_dropped`].
    dropped: u64,
    /// When the last batch was taken.
    last_sent_ms: u64,
}

impl Default for RecordBuffer {
    fn default() -> Self {
        Self::with_capacity(MAX_BUFFERED)
    }
}

impl RecordBuffer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { lines: VecDeque::new(), capacity: capacity.max(1), in_flight: 0, dropped: 0, last_sent_ms: 0 }
    }

    /// Keep one record's line. When full, the oldest record not in flight makes room.
    pub fn push(&mut self, line: Vec<u8>) {
        if self.lines.len() >= self.capacity {
            // (The batch in flight stays: it may already be stored.)
            if self.lines.len() > self.in_flight {
                self.lines.remove(self.in_flight);
            } else {
                self.dropped += 1;
                return;
            }
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// The next batch's body (records separated by `\n`), when none is in
    /// flight and a delivery is due (see [`SEND_AT`]). It stays in the buffer
    /// until [`RecordBuffer::delivered`].
    pub fn next_batch(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.in_flight > 0 || self.lines.is_empty() {
            return None;
        }
        if self.lines.len() < SEND_AT && now_ms.saturating_sub(self.last_sent_ms) < SEND_AFTER_MS {
            return None;
        }
        self.last_sent_ms = now_ms;
        let n = self.lines.len().min(BATCH);
        let mut body = Vec::with_capacity(self.lines.iter().take(n).map(|l| l.len() + 1).sum());
        for line in self.lines.iter().take(n) {
            body.extend_from_slice(line);
            body.push(b'\n');
        }
        self.in_flight = n;
        Some(body)
    }

    /// The control plane answered the batch in flight: stored (it leaves the
    /// buffer) or not (it is sent again).
    pub fn delivered(&mut self, stored: bool) {
        if stored {
            self.lines.drain(..self.in_flight.min(self.lines.len()));
        }
        self.in_flight = 0;
    }

    /// Records dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Vec<u8> {
        format!("{{\"id\":\"{n}\"}}").into_bytes()
    }

    #[test]
    fn a_batch_leaves_only_once_stored() {
        let mut b = RecordBuffer::default();
        for n in 0..3 {
            b.push(line(n));
        }
        let t = 10_000;
        let body = b.next_batch(t).unwrap();
        assert_eq!(body, b"{\"id\":\"0\"}\n{\"id\":\"1\"}\n{\"id\":\"2\"}\n");
        assert_eq!(b.next_batch(t + SEND_AFTER_MS), None, "one batch at a time");
        b.push(line(3));
        b.delivered(false);
        // Not stored: the same records again, and the new one, a while later.
        assert_eq!(b.next_batch(t + 1), None);
        assert_eq!(b.next_batch(t + SEND_AFTER_MS).unwrap().iter().filter(|&&c| c == b'\n').count(), 4);
        b.delivered(true);
        assert!(b.is_empty());
        assert_eq!(b.next_batch(t + 10 * SEND_AFTER_MS), None);
    }

    #[test]
    fn a_busy_buffer_sends_at_once_a_quiet_one_after_a_while() {
        let mut b = RecordBuffer::default();
        let t = 10_000;
        b.push(line(0));
        assert!(b.next_batch(t).is_some());
        b.delivered(true);
        b.push(line(1));
        assert_eq!(b.next_batch(t + 10), None, "one record waits");
        for n in 2..=SEND_AT {
            b.push(line(n));
        }
        let body = b.next_batch(t + 20).expect("enough records go at once");
        assert_eq!(body.iter().filter(|&&c| c == b'\n').count(), SEND_AT);
        b.delivered(true);
        b.push(line(0));
        assert_eq!(b.next_batch(t + 20 + SEND_AFTER_MS - 1), None);
        assert!(b.next_batch(t + 20 + SEND_AFTER_MS).is_some());
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let mut b = RecordBuffer::with_capacity(3);
        for n in 0..3 {
            b.push(line(n));
        }
        let _ = b.next_batch(5_000); // 0, 1, 2 in flight
        b.push(line(3)); // nothing but the batch in flight to make room for: dropped
        assert_eq!(b.take_dropped(), 1);
        b.delivered(true);
        for n in 4..8 {
            b.push(line(n));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.take_dropped(), 1);
        assert_eq!(b.next_batch(10_000).unwrap(), b"{\"id\":\"5\"}\n{\"id\":\"6\"}\n{\"id\":\"7\"}\n");
    }
}
