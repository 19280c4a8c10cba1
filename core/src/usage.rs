//! Token usage as providers report it, normalised so each token is billed once.
//!
//! OpenAI-style `usage` counts cached prompt tokens inside `prompt_tokens`
//! (`prompt_tokens_details.cached_tokens`) and reasoning tokens inside
//! `completion_tokens` (`completion_tokens_details.reasoning_tokens`): they are
//! parts, not extras. Anthropic counts cache reads and cache writes apart from
//! `input_tokens`. [`Usage`] keeps OpenAI's meaning: `prompt_tokens` is every
//! input token, of which `cached_tokens` were read from a cache and
//! `cache_write_tokens` written to one; `completion_tokens` is every output
//! token, of which `reasoning_tokens` were reasoning.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Part of `prompt_tokens` written to the prompt cache (Anthropic).
    pub cache_write_tokens: u64,
    /// Part of `completion_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
    // Anthropic's Messages API (and OpenAI-compatible gateways passing it on).
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    // DeepSeek reports cache hits here.
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl OpenAiUsage {
    fn normalise(self) -> Usage {
        if let Some(input) = self.input_tokens {
            // Anthropic: cache reads and writes come on top of `input_tokens`.
            let read = self.cache_read_input_tokens.unwrap_or(0);
            let write = self.cache_creation_input_tokens.unwrap_or(0);
            return Usage {
                prompt_tokens: input + read + write,
                completion_tokens: self.output_tokens.unwrap_or(0),
                cached_tokens: read,
                cache_write_tokens: write,
                reasoning_tokens: 0,
            };
        }
        let cached = self
            .prompt_tokens_details
            .map(|d| d.cached_tokens)
            .or(self.prompt_cache_hit_tokens)
            .unwrap_or(0)
            .min(self.prompt_tokens);
        let reasoning =
            self.completion_tokens_details.map(|d| d.reasoning_tokens).unwrap_or(0).min(self.completion_tokens);
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: cached,
            cache_write_tokens: 0,
            reasoning_tokens: reasoning,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

/// The `usage` of one JSON document (a chat completion, or one stream event):
/// `None` when it has none (or `"usage": null`, as OpenAI sends in every event
/// but the last).
///
/// Every answer passes through here, so only the usage object is parsed: the
/// last `"usage"` key found by a byte search (providers put usage at the end)
/// is read where it stands. Should that not be the document's own key (the
/// same bytes inside message text), the whole document is parsed instead.
pub fn from_json(doc: &[u8]) -> Option<Usage> {
    static KEY: std::sync::OnceLock<memchr::memmem::FinderRev<'static>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| memchr::memmem::FinderRev::new(b"\"usage\"")).rfind(doc)?;
    let mut rest = doc.get(key + 7..)?.trim_ascii_start();
    rest = rest.strip_prefix(b":")?.trim_ascii_start();
    if rest.starts_with(b"null") {
        return None;
    }
    let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<OpenAiUsage>();
    if let Some(Ok(u)) = values.next() {
        // The object must be followed by what can follow a member: `,` or `}`.
        let after = rest.get(values.byte_offset()..).unwrap_or_default().trim_ascii_start();
        if matches!(after.first(), Some(b',' | b'}')) {
            return Some(u.normalise());
        }
    }
    let parsed: WithUsage = serde_json::from_slice(doc).ok()?;
    parsed.usage.map(OpenAiUsage::normalise)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// A rough token count for text a provider did not count (about four bytes a
/// token for English, one token a character for CJK): the router's estimate when
/// no usage came back. Records say when a count is estimated.
pub fn estimate_tokens(text: &[u8]) -> u64 {
    let mut tokens = 0u64;
    let mut ascii = 0u64;
    for ch in String::from_utf8_lossy(text).chars() {
        if ch.is_ascii() {
            ascii += 1;
        } else {
            tokens += 1;
        }
    }
    tokens + ascii.div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_cached_and_reasoning_tokens_are_parts_not_extras() {
        let u = from_json(
            br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
               "prompt_tokens_details":{"cached_tokens":1920},
               "completion_tokens_details":{"reasoning_tokens":192}}}"#,
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 2006,
                completion_tokens: 300,
                cached_tokens: 1920,
                cache_write_tokens: 0,
                reasoning_tokens: 192
            }
        );
        assert_eq!(u.total(), 2306);
    }

    #[test]
    fn anthropic_cache_tokens_come_on_top_of_input_tokens() {
        let u = from_json(
            br#"{"type":"message","usage":{"input_tokens":50,"cache_read_input_tokens":1000,
               "cache_creation_input_tokens":200,"output_tokens":40}}"#,
        )
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens, u.completion_tokens),
            (1250, 1000, 200, 40)
        );
    }

    #[test]
    fn deepseek_cache_hits_count_as_cached() {
        let u = from_json(br#"{"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_cache_hit_tokens":64}}"#)
            .unwrap();
        assert_eq!(u.cached_tokens, 64);
    }

    #[test]
    fn documents_without_usage_have_none() {
        assert_eq!(from_json(br#"{"choices":[{"delta":{"content":"hi"}}]}"#), None);
        assert_eq!(from_json(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(from_json(b"not json \"usage\""), None);
        // A part larger than its whole is cut to it (a provider's bug is not billed twice).
        let u = from_json(br#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":99}}}"#).unwrap();
        assert_eq!(u.cached_tokens, 10);
    }

    #[test]
    fn the_usage_key_inside_message_text_does_not_fool_the_quick_read() {
        let doc = br#"{"choices":[{"message":{"content":"see "usage": {"prompt_tokens": 99}"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        assert_eq!(from_json(doc).unwrap().prompt_tokens, 3);
        let text_only = br#"{"choices":[{"message":{"content":""usage": {"prompt_tokens": 99} and more"}}]}"#;
        assert_eq!(from_json(text_only), None);
        let spaced = br#"{ "usage" :  { "prompt_tokens" : 5 , "completion_tokens": 2 } }"#;
        assert_eq!(from_json(spaced).unwrap().total(), 7);
    }

    #[test]
    fn estimates_count_ascii_by_four_and_cjk_by_one() {
        assert_eq!(estimate_tokens(b"hello world!"), 3);
        assert_eq!(estimate_tokens("\u{4f60}\u{597d}".as_bytes()), 2);
        assert_eq!(estimate_tokens(b""), 0);
    }
}
