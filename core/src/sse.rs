//! A streamed chat completion as it passes, event by event, without buffering
//! the stream: the usage the provider reports in its last event, the number of
//! events (the estimate when no usage comes), and two edits the router makes:
//! the usage event is dropped for a client that did not ask for it (strict
//! clients break on an unexpected `choices: []` event; the router asked for it
//! to bill the request), and the request's cost goes in an SSE comment before
//! `[DONE]` (`: x-router-cost 0.000123`), which clients ignore.
//!
//! Events may be split across body chunks: an incomplete event at the end of a
//! chunk is held back and sent with the next one, so a usage event split in two
//! is still read (and still dropped whole).

use crate::usage::{self, Usage};

/// The comment line carrying the cost, before `[DONE]`.
pub const COST_COMMENT: &str = ": x-router-cost ";

#[derive(Debug, Default)]
pub struct SseProcessor {
    /// The start of an event whose end has not arrived yet.
    pending: Vec<u8>,
    /// The client asked for the usage event itself (`stream_options.include_usage`).
    client_wants_usage: bool,
    pub usage: Option<Usage>,
    /// Events with content (or any `data:` event but `[DONE]`).
    pub events: u64,
    /// `[DONE]` has passed.
    pub done: bool,
}

/// What to do with a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// Send it as it is.
    Keep,
    /// Send these bytes instead (possibly none).
    Replace(Vec<u8>),
}

impl SseProcessor {
    pub fn new(client_wants_usage: bool) -> Self {
        Self { client_wants_usage, ..Self::default() }
    }

    /// Take one chunk. `cost` is asked for when `[DONE]` arrives and returns the
    /// comment's text, if any.
    pub fn chunk(&mut self, chunk: &[u8], end_of_stream: bool, cost: &mut dyn FnMut(&Self) -> Option<String>) -> Edit {
        // The common case: whole events, none of them special.
        if self.pending.is_empty()
            && (chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n") || chunk.is_empty())
            && !usage::contains(chunk, b"\"usage\"")
            && !usage::contains(chunk, b"[DONE]")
        {
            self.events += count(chunk, b"data:");
            return Edit::Keep;
        }
        let had_pending = !self.pending.is_empty();
        let mut data = std::mem::take(&mut self.pending);
        data.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut rest = &data[..];
        let mut changed = had_pending;
        while let Some((event, tail)) = split_event(rest) {
            rest = tail;
            match self.event(event, cost) {
                None => out.extend_from_slice(event),
                Some(replacement) => {
                    changed = true;
                    out.extend_from_slice(&replacement);
                }
            }
        }
        if !rest.is_empty() {
            if end_of_stream {
                // The stream ends without a blank line: pass what there is.
                self.event(rest, cost);
                out.extend_from_slice(rest);
            } else {
                self.pending = rest.to_vec();
                changed = true;
            }
        }
        if !changed && out.len() == chunk.len() {
            return Edit::Keep;
        }
        Edit::Replace(out)
    }

    /// One whole event (with its blank line); `Some` to replace it.
    fn event(&mut self, event: &[u8], cost: &mut dyn FnMut(&Self) -> Option<String>) -> Option<Vec<u8>> {
        let data = data_of(event)?;
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            let comment = cost(self)?;
            let mut out = format!("{COST_COMMENT}{comment}\n\n").into_bytes();
            out.extend_from_slice(event);
            return Some(out);
        }
        self.events += 1;
        let found = usage::from_json(data)?;
        self.usage = Some(found);
        // An event with choices too carries content: it stays whatever it says.
        if self.client_wants_usage || has_choices(data) {
            return None;
        }
        self.events = self.events.saturating_sub(1);
        Some(Vec::new())
    }
}

/// The first whole event of `data` (through its blank line) and the rest.
fn split_event(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == b'\n' {
            if data[i + 1] == b'\n' {
                return Some(data.split_at(i + 2));
            }
            if data[i + 1] == b'\r' && data.get(i + 2) == Some(&b'\n') {
                return Some(data.split_at(i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The value of an event's `data:` line (events here have one).
fn data_of(event: &[u8]) -> Option<&[u8]> {
    event.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let v = line.strip_prefix(b"data:")?;
        Some(v.strip_prefix(b" ").unwrap_or(v))
    })
}

/// A chunk with non-empty `choices` (content the client is owed).
fn has_choices(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Choices {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Choices>(data).is_ok_and(|c| !c.choices.is_empty())
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    memchr::memmem::find_iter(hay, needle).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &str =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(p: &mut SseProcessor, chunks: &[&str]) -> String {
        let mut out = String::new();
        let n = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            let mut cost = |s: &SseProcessor| s.usage.map(|u| format!("{}", u.total()));
            match p.chunk(c.as_bytes(), i + 1 == n, &mut cost) {
                Edit::Keep => out.push_str(c),
                Edit::Replace(b) => out.push_str(std::str::from_utf8(&b).unwrap()),
            }
        }
        out
    }

    #[test]
    fn the_usage_event_is_read_dropped_and_the_cost_comes_before_done() {
        let mut p = SseProcessor::new(false);
        let out = run(&mut p, &[CONTENT, CONTENT, USAGE, DONE]);
        assert_eq!(out, format!("{CONTENT}{CONTENT}: x-router-cost 11\n\n{DONE}"));
        assert_eq!(p.usage.unwrap().prompt_tokens, 9);
        assert_eq!(p.events, 2);
        assert!(p.done);
    }

    #[test]
    fn a_client_that_asked_for_usage_gets_it() {
        let mut p = SseProcessor::new(true);
        let out = run(&mut p, &[CONTENT, &format!("{USAGE}{DONE}")]);
        assert_eq!(out, format!("{CONTENT}{USAGE}: x-router-cost 11\n\n{DONE}"));
    }

    #[test]
    fn a_usage_event_split_across_chunks_is_still_read_and_dropped() {
        for cut in 1..USAGE.len() {
            let mut p = SseProcessor::new(false);
            let (a, b) = USAGE.split_at(cut);
            let out = run(&mut p, &[CONTENT, a, b, DONE]);
            assert_eq!(out, format!("{CONTENT}: x-router-cost 11\n\n{DONE}"), "cut at {cut}");
            assert_eq!(p.usage.unwrap().completion_tokens, 2);
        }
    }

    #[test]
    fn events_are_counted_and_crlf_streams_work() {
        let mut p = SseProcessor::new(false);
        let crlf = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n";
        let out = run(&mut p, &[crlf, crlf, "data: [DONE]\r\n\r\n"]);
        assert_eq!(p.events, 2);
        assert!(out.ends_with("data: [DONE]\r\n\r\n"));
        // A stream that just stops (the provider died) passes what it sent.
        let mut p = SseProcessor::new(false);
        let out = run(&mut p, &[CONTENT, "data: {\"cho"]);
        assert_eq!(out, format!("{CONTENT}data: {{\"cho"));
    }

    #[test]
    fn usage_in_an_event_with_content_is_kept() {
        // Some providers put usage in the last content event.
        let ev = "data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
        let mut p = SseProcessor::new(false);
        let out = run(&mut p, &[ev, DONE]);
        assert!(out.starts_with(ev));
        assert_eq!(p.usage.unwrap().total(), 2);
    }
}
