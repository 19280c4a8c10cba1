//! Facts derived from a model name alone: its tags, its core name, its date
//! suffix, whether it is a chat model at all and the sizes it advertises.
//!
//! Providers spell the same model many ways (`Qwen/Qwen3-235B-A22B`,
//! `qwen/qwen3-235b-a22b:free`, `claude-3-haiku@20240307`), so everything here works on
//! the name as text, never on a list of known models: a model released tomorrow gets
//! the same treatment. Every function is total: any string, including empty, very long
//! or non-ASCII ones, gives an answer and never panics.

use std::borrow::Cow;
use std::collections::HashSet;

/// Characters that always separate tags.
fn is_separator(c: char) -> bool {
    matches!(c, ':' | '/' | '@' | '-' | '_') || c.is_whitespace()
}

/// The tags of a model name: lower-cased, split on ':' '/' '@' '-' '_' (and whitespace),
/// and on '.' only where the '.' is NOT inside a version number (a '.' with a digit on both
/// sides stays: "3.5", "v3.1", "4.5"). Empty parts dropped, duplicates dropped, first-seen order.
///
/// Why the '.' rule: versions ("gpt-3.5", "qwen2.5", "llama-3.1") must stay one tag so
/// `tag:3.5` means what a user expects, while dots used as separators ("accounts.fireworks",
/// "FLUX.1") split like any other punctuation.
pub fn model_tags(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.to_lowercase().chars().collect();
    let mut tags: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        if !current.is_empty() {
            let tag = std::mem::take(current);
            if seen.insert(tag.clone()) {
                tags.push(tag);
            }
        }
    };
    for (i, &c) in chars.iter().enumerate() {
        let split = if c == '.' {
            let before = i.checked_sub(1).and_then(|j| chars.get(j)).is_some_and(|p| p.is_ascii_digit());
            let after = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
            !(before && after)
        } else {
            is_separator(c)
        };
        if split {
            flush(&mut current);
        } else {
            current.push(c);
        }
    }
    flush(&mut current);
    tags
}

/// Whether `s` is exactly `n` ASCII digits.
fn all_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses an all-digit string (already checked to be ASCII digits) as a number.
fn num(s: &str) -> u32 {
    s.bytes().fold(0u32, |acc, b| acc.saturating_mul(10).saturating_add(u32::from(b - b'0')))
}

fn valid_year(y: &str) -> bool {
    all_digits(y, 4) && (2000..=2099).contains(&num(y))
}

fn valid_month(m: &str) -> bool {
    all_digits(m, 2) && (1..=12).contains(&num(m))
}

fn valid_day(d: &str) -> bool {
    all_digits(d, 2) && (1..=31).contains(&num(d))
}

/// Whether `s` is a date in one of the accepted suffix forms: YYYYMMDD, YYYYMM, YYYY-MM-DD.
/// Slicing is done with `str::get`, so a non-ASCII `s` simply fails to match.
fn is_date(s: &str) -> bool {
    match s.len() {
        8 => {
            all_digits(s, 8)
                && s.get(0..4).is_some_and(valid_year)
                && s.get(4..6).is_some_and(valid_month)
                && s.get(6..8).is_some_and(valid_day)
        }
        6 => all_digits(s, 6) && s.get(0..4).is_some_and(valid_year) && s.get(4..6).is_some_and(valid_month),
        10 => {
            s.as_bytes().get(4) == Some(&b'-')
                && s.as_bytes().get(7) == Some(&b'-')
                && s.get(0..4).is_some_and(valid_year)
                && s.get(5..7).is_some_and(valid_month)
                && s.get(8..10).is_some_and(valid_day)
        }
        _ => false,
    }
}

/// The name without a trailing date suffix, if it has one. A date suffix is, after a final
/// '-' (or '@'), one of YYYYMMDD, YYYYMM, or YYYY-MM-DD, with year 2000..=2099, month 01..=12,
/// day 01..=31. Returns None when there is no such suffix.
///
/// The ranges are what keep "gpt-4-0613" (4 digits), "model-8192" and provider endpoint ids
/// such as "ep-20250613210739-qjxdl" from being read as dates. The day is not checked
/// against the month ("-20240231" counts): the point is recognising a snapshot stamp, not
/// validating a calendar. The part before the separator must be non-empty.
pub fn strip_date_suffix(name: &str) -> Option<&str> {
    // YYYY-MM-DD contains '-' itself, so it is tried first, on the last 10 bytes.
    if name.len() > 11 {
        let cut = name.len() - 10;
        if let (Some(head), Some(date)) = (name.get(..cut), name.get(cut..)) {
            if is_date(date) {
                if let Some(prefix) = head.strip_suffix(['-', '@']) {
                    if !prefix.is_empty() {
                        return Some(prefix);
                    }
                }
            }
        }
    }
    let sep = name.rfind(['-', '@'])?;
    let prefix = name.get(..sep)?;
    let suffix = name.get(sep + 1..)?;
    if !prefix.is_empty() && (suffix.len() == 8 || suffix.len() == 6) && is_date(suffix) {
        Some(prefix)
    } else {
        None
    }
}

/// The core name, used to match a bare name across channels: lower-cased; the vendor
/// prefix up to and including the LAST '/' dropped; a ':variant' suffix (from the first ':'
/// after the prefix) dropped; then a date suffix dropped (strip_date_suffix).
///
/// Surrounding whitespace is trimmed first. The result may be empty (e.g. for "openai/"),
/// and callers should not match on an empty core name.
pub fn core_name(name: &str) -> String {
    core_name_ref(name).into_owned()
}

/// [`core_name`], borrowed from `name` when it is already lower case (the usual
/// case on the request path: no allocation).
pub fn core_name_ref(name: &str) -> Cow<'_, str> {
    let trimmed = name.trim();
    if trimmed.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        Cow::Owned(core_of_lower(&trimmed.to_lowercase()).to_string())
    } else {
        Cow::Borrowed(core_of_lower(trimmed))
    }
}

fn core_of_lower(lower: &str) -> &str {
    let after_vendor = match lower.rfind('/') {
        Some(i) => lower.get(i + 1..).unwrap_or(""),
        None => lower,
    };
    let without_variant = match after_vendor.find(':') {
        Some(i) => after_vendor.get(..i).unwrap_or(""),
        None => after_vendor,
    };
    strip_date_suffix(without_variant).unwrap_or(without_variant)
}

/// Tags that on their own mark a non-chat model. They are matched as whole tags because
/// as substrings these short words occur inside unrelated names ("embed" in "embedded",
/// "flux" in "influx", "tts"/"e5"/"gte"/"bge" inside arbitrary ids).
const NON_CHAT_TAGS: &[&str] = &["tts", "image", "audio", "flux", "e5", "gte", "bge", "embed", "dalle"];

/// Long, unambiguous stems matched anywhere in the lower-cased name, including across
/// separators ("dall-e", "stable-diffusion") and as word prefixes ("embeddings",
/// "reranker"). "embed" is deliberately not here: "embedded-llm-chat" is a chat model.
const NON_CHAT_SUBSTRINGS: &[&str] =
    &["embedding", "rerank", "whisper", "moderation", "dall-e", "stable-diffusion", "sdxl", "imagen", "transcribe"];

/// A model that is not for chat: embedding, rerank, text-to-speech, speech-to-text,
/// image generation, moderation. Case-insensitive.
///
/// The rule, chosen to avoid false positives on plain substrings:
/// - a tag (see [`model_tags`]) equal to one of: tts, image, audio, flux, e5, gte, bge, embed,
///   dalle;
/// - or the lower-cased name containing one of the long stems: embedding, rerank, whisper,
///   moderation, dall-e, stable-diffusion, sdxl, imagen, transcribe.
///
/// So "nomic-embed-text" and "gpt-image-1" are non-chat, while "embedded-llm-chat" and
/// "llama-3.2-11b-vision-instruct" are chat. A chat model with audio output such as
/// "gpt-4o-audio-preview" counts as non-chat: it needs audio-specific request fields.
pub fn is_non_chat(name: &str) -> bool {
    let lower = name.to_lowercase();
    if NON_CHAT_SUBSTRINGS.iter().any(|s| lower.contains(s)) {
        return true;
    }
    model_tags(&lower).iter().any(|t| NON_CHAT_TAGS.contains(&t.as_str()))
}

/// Sizes a model name advertises. Every field is `None` when the name does not say.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SizeFacts {
    /// Total parameters, in billions.
    pub params_b: Option<f64>,
    /// Active parameters of a mixture-of-experts model ("a22b"), in billions.
    pub active_params_b: Option<f64>,
    /// Context window in tokens.
    pub context: Option<u64>,
}

/// A decimal number: digits, optionally one '.' followed by digits ("7", "0.6", "1.5").
fn decimal(s: &str) -> Option<f64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
}

/// An integer made of ASCII digits only, without overflow.
fn integer(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok()
}

/// "8x7b" -> 56: experts times parameters per expert.
fn experts_times_size(body: &str) -> Option<f64> {
    let (n, each) = body.split_once('x')?;
    let product = integer(n)? as f64 * decimal(each)?;
    Some(product).filter(|v| v.is_finite() && *v > 0.0)
}

/// A context length in `unit`s: a power of two means binary multiples (32k -> 32768,
/// 1m -> 1048576), as providers derive those windows from powers of two; any other count
/// (200k) is decimal.
fn context_len(n: u64, binary: u64, decimal: u64) -> Option<u64> {
    if n == 0 {
        None
    } else if n.is_power_of_two() {
        n.checked_mul(binary)
    } else {
        n.checked_mul(decimal)
    }
}

fn max_opt<T: PartialOrd>(a: Option<T>, b: T) -> Option<T> {
    match a {
        Some(a) if a >= b => Some(a),
        _ => Some(b),
    }
}

/// Parameter count in billions parsed from the name:
/// the largest "<number>b" tag (e.g. 235b, 7b, 0.6b, 1.5b, 270m -> 0.27); an "a22b"-style tag
/// is the ACTIVE parameter count and is returned separately. Also "8x7b" -> 56.
///
/// Context is parsed from tags like 32k, 128k, 200k, 1m, 2m: a power-of-two count maps to
/// binary multiples (32k -> 32768, 128k -> 131072, 256k -> 262144, 1m -> 1048576), any other
/// to decimal ones (200k -> 200000). "<n>m" is ambiguous: with n >= 100 it is a parameter
/// count (270m, 600m -> 0.27, 0.6 billion), below 100 it is a context (1m, 2m).
///
/// Only whole tags count, so version numbers ("3.1") and names like "4o" are never sizes,
/// and a bare number ("32768") is not taken as a context. When several tags of one kind
/// appear, the largest wins.
pub fn size_facts(name: &str) -> SizeFacts {
    let mut facts = SizeFacts::default();
    for tag in model_tags(name) {
        if let Some(body) = tag.strip_suffix('b') {
            if let Some(v) = decimal(body).or_else(|| experts_times_size(body)) {
                facts.params_b = max_opt(facts.params_b, v);
            } else if let Some(v) = body.strip_prefix('a').and_then(decimal) {
                facts.active_params_b = max_opt(facts.active_params_b, v);
            }
        } else if let Some(body) = tag.strip_suffix('k') {
            if let Some(v) = integer(body).and_then(|n| context_len(n, 1024, 1000)) {
                facts.context = max_opt(facts.context, v);
            }
        } else if let Some(body) = tag.strip_suffix('m') {
            match integer(body) {
                Some(n) if n >= 100 => {
                    let v = n as f64 / 1000.0;
                    if v.is_finite() {
                        facts.params_b = max_opt(facts.params_b, v);
                    }
                }
                Some(n) => {
                    if let Some(v) = context_len(n, 1024 * 1024, 1_000_000) {
                        facts.context = max_opt(facts.context, v);
                    }
                }
                None => {}
            }
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(name: &str) -> Vec<String> {
        model_tags(name)
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_openrouter_free_variant() {
        assert_eq!(tags("qwen/qwen3-30b-a3b:free"), v(&["qwen", "qwen3", "30b", "a3b", "free"]));
    }

    #[test]
    fn tags_vendor_prefix() {
        assert_eq!(tags("openai/gpt-4o-mini"), v(&["openai", "gpt", "4o", "mini"]));
    }

    #[test]
    fn tags_endpoint_id() {
        assert_eq!(tags("ep-20250613210739-qjxdl"), v(&["ep", "20250613210739", "qjxdl"]));
    }

    #[test]
    fn tags_keep_version_dots() {
        assert_eq!(tags("gpt-3.5-turbo"), v(&["gpt", "3.5", "turbo"]));
        assert_eq!(tags("deepseek-v3.1"), v(&["deepseek", "v3.1"]));
        assert_eq!(tags("glm-4.5-air"), v(&["glm", "4.5", "air"]));
    }

    #[test]
    fn tags_dedup_and_lowercase() {
        assert_eq!(tags("meta-llama/Llama-3.1-8B-Instruct"), v(&["meta", "llama", "3.1", "8b", "instruct"]));
        assert_eq!(tags("Qwen/Qwen2.5-72B-Instruct"), v(&["qwen", "qwen2.5", "72b", "instruct"]));
    }

    #[test]
    fn tags_split_non_version_dots() {
        assert_eq!(tags("accounts.fireworks/x"), v(&["accounts", "fireworks", "x"]));
        assert_eq!(tags("black-forest-labs/FLUX.1-schnell"), v(&["black", "forest", "labs", "flux", "1", "schnell"]));
        assert_eq!(tags("a.b..c.1."), v(&["a", "b", "c", "1"]));
    }

    #[test]
    fn tags_at_date() {
        assert_eq!(tags("claude-3-haiku@20240307"), v(&["claude", "3", "haiku", "20240307"]));
    }

    #[test]
    fn tags_kimi_free() {
        assert_eq!(tags("moonshotai/kimi-k2:free"), v(&["moonshotai", "kimi", "k2", "free"]));
    }

    #[test]
    fn tags_edge_inputs() {
        assert!(tags("").is_empty());
        assert!(tags("--//::@@__  \t").is_empty());
        assert_eq!(tags("Ünïcödé-模型 x"), v(&["ünïcödé", "模型", "x"]));
        assert_eq!(tags("İ-x"), v(&["i\u{307}", "x"]));
        let long = "ab-".repeat(100_000);
        assert_eq!(tags(&long), v(&["ab"]));
        let long_unique: String = (0..20_000).map(|i| format!("t{i}.")).collect();
        assert_eq!(tags(&long_unique).len(), 20_000);
    }

    #[test]
    fn date_suffix_examples() {
        assert_eq!(strip_date_suffix("claude-3-haiku-20240307"), Some("claude-3-haiku"));
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date_suffix("o1-202412"), Some("o1"));
        assert_eq!(strip_date_suffix("claude-3-haiku@20240307"), Some("claude-3-haiku"));
        assert_eq!(strip_date_suffix("ep-20250203083646-2szv9"), None);
        assert_eq!(strip_date_suffix("gpt-4-0613"), None);
        assert_eq!(strip_date_suffix("model-8192"), None);
        assert_eq!(strip_date_suffix("x-20241399"), None);
        assert_eq!(strip_date_suffix("x-20241301"), None);
        assert_eq!(strip_date_suffix("x-20240100"), None);
        assert_eq!(strip_date_suffix("x-19991231"), None);
        assert_eq!(strip_date_suffix("x-21000101"), None);
        assert_eq!(strip_date_suffix("20240307"), None);
        assert_eq!(strip_date_suffix("-20240307"), None);
        assert_eq!(strip_date_suffix("2024-08-06"), None);
        assert_eq!(strip_date_suffix("-2024-08-06"), None);
        assert_eq!(strip_date_suffix("x-2024-13-06"), None);
        assert_eq!(strip_date_suffix("x2024-08-06"), None);
    }

    #[test]
    fn date_suffix_never_panics() {
        for s in [
            "",
            "-",
            "@",
            "é-20240307",
            "x-2024é08-06",
            "模型模型-2024-08-06",
            "x-２０２４０３０７",
            "éééééééééééé",
            "-é",
        ] {
            let _ = strip_date_suffix(s);
        }
        assert_eq!(strip_date_suffix("模型-2024-08-06"), Some("模型"));
        assert_eq!(strip_date_suffix("x-２０２４０３０７"), None);
    }

    #[test]
    fn core_name_examples() {
        assert_eq!(core_name("qwen/qwen3-235b-a22b:free"), "qwen3-235b-a22b");
        assert_eq!(core_name("Qwen/Qwen3-235B-A22B"), "qwen3-235b-a22b");
        assert_eq!(core_name("claude-3-haiku-20240307"), "claude-3-haiku");
        assert_eq!(core_name("openai/gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(core_name("doubao/ep-20250203083646-2szv9:free"), "ep-20250203083646-2szv9");
        assert_eq!(core_name("gpt-4o"), "gpt-4o");
        assert_ne!(core_name("gpt-4o"), core_name("gpt-4o-mini"));
    }

    #[test]
    fn core_name_edges() {
        assert_eq!(core_name(""), "");
        assert_eq!(core_name("openai/"), "");
        assert_eq!(core_name("a/b/c:x:y"), "c");
        assert_eq!(core_name("a:b/c"), "c");
        assert_eq!(core_name("  GPT-4o  "), "gpt-4o");
        assert_eq!(core_name("x/claude-3-haiku-20240307:beta"), "claude-3-haiku");
        assert_eq!(core_name("模型/Ω-2024-08-06"), "ω");
    }

    #[test]
    fn core_name_borrows_a_lower_case_name() {
        assert!(matches!(core_name_ref(" openai/gpt-4o-mini:free "), Cow::Borrowed("gpt-4o-mini")));
        assert!(matches!(core_name_ref("GPT-4o"), Cow::Owned(ref s) if s == "gpt-4o"));
        assert!(matches!(core_name_ref("模型/Ω-2024-08-06"), Cow::Owned(ref s) if s == "ω"));
    }

    #[test]
    fn non_chat_models() {
        for name in [
            "text-embedding-3-small",
            "BAAI/bge-m3",
            "bge-reranker-v2-m3",
            "tts-1-hd",
            "whisper-large-v3",
            "dall-e-3",
            "omni-moderation-latest",
            "black-forest-labs/FLUX.1-schnell",
            "gpt-image-1",
            "jina-embeddings-v3",
            "nomic-embed-text",
            "gpt-4o-audio-preview",
            "gpt-4o-mini-transcribe",
            "intfloat/multilingual-e5-large",
            "Alibaba-NLP/gte-Qwen2-7B-instruct",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "imagen-3.0-generate-002",
            "jina-reranker-m0",
        ] {
            assert!(is_non_chat(name), "{name} should be non-chat");
        }
    }

    #[test]
    fn chat_models() {
        for name in [
            "gpt-4o",
            "qwen3-235b-a22b",
            "deepseek-r1",
            "llama-3.2-11b-vision-instruct",
            "gemini-2.0-flash",
            "embedded-llm-chat",
            "qwen2.5-72b-instruct",
            "moonshotai/kimi-k2:free",
            "",
            "模型",
        ] {
            assert!(!is_non_chat(name), "{name} should be chat");
        }
    }

    #[test]
    fn sizes_moe() {
        let f = size_facts("qwen/qwen3-235b-a22b:free");
        assert_eq!(f.params_b, Some(235.0));
        assert_eq!(f.active_params_b, Some(22.0));
        assert_eq!(f.context, None);
    }

    #[test]
    fn sizes_version_is_not_size() {
        let f = size_facts("llama-3.1-8b-instant");
        assert_eq!(f.params_b, Some(8.0));
        assert_eq!(f.active_params_b, None);
    }

    #[test]
    fn sizes_small() {
        assert_eq!(size_facts("gemma-3-270m").params_b, Some(0.27));
        assert_eq!(size_facts("gemma-3-270m").context, None);
        assert_eq!(size_facts("qwen3-0.6b").params_b, Some(0.6));
        assert_eq!(size_facts("qwen2.5-1.5b-instruct").params_b, Some(1.5));
    }

    #[test]
    fn sizes_experts() {
        let f = size_facts("mixtral-8x7b-32768");
        assert_eq!(f.params_b, Some(56.0));
        assert_eq!(f.context, None);
        assert_eq!(size_facts("Mixtral-8x22B").params_b, Some(176.0));
    }

    #[test]
    fn sizes_context() {
        assert_eq!(size_facts("doubao-1.5-pro-256k").context, Some(262_144));
        assert_eq!(size_facts("moonshot-v1-128k").context, Some(131_072));
        assert_eq!(size_facts("moonshot-v1-8k").context, Some(8192));
        assert_eq!(size_facts("x-4k").context, Some(4096));
        assert_eq!(size_facts("x-16k").context, Some(16_384));
        assert_eq!(size_facts("x-32k").context, Some(32_768));
        assert_eq!(size_facts("x-64k").context, Some(65_536));
        assert_eq!(size_facts("x-200k").context, Some(200_000));
        assert_eq!(size_facts("x-1m").context, Some(1_048_576));
        assert_eq!(size_facts("x-2m").context, Some(2_097_152));
        assert_eq!(size_facts("x-1m").params_b, None);
    }

    #[test]
    fn sizes_none() {
        assert_eq!(size_facts("gpt-4o"), SizeFacts::default());
        assert_eq!(size_facts(""), SizeFacts::default());
        assert_eq!(size_facts("x-0b-0k-0m-b-k-m-ab-xb-8xb"), SizeFacts::default());
    }

    #[test]
    fn sizes_huge_numbers_do_not_panic() {
        let big = "9".repeat(400);
        let f = size_facts(&format!("x-{big}k-{big}m-{big}b-a{big}b-{big}x{big}b"));
        assert_eq!(f.context, None);
        assert_eq!(f.params_b, None);
        assert_eq!(f.active_params_b, None);
        let f = size_facts("x-99999999999999999k-99999999999999999m");
        assert_eq!(f.context, None);
    }
}
