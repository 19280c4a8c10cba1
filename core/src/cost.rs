//! What a request cost, exactly: token counts times the channel's prices, in
//! integer picodollars (1e-12 USD). Prices are configured in USD per million
//! tokens; one token at $0.15 per million is 150,000 picodollars, so prices with
//! up to six decimals are exact, and sums of records are exact.

use crate::usage::Usage;

/// Picodollars in one US dollar.
pub const PICO_PER_USD: u64 = 1_000_000_000_000;

/// A model's prices on one channel, in picodollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    /// Prompt tokens read from the provider's cache (else the input price).
    pub cached_input: Option<u64>,
    /// Prompt tokens written to the provider's cache (else the input price).
    pub cache_write: Option<u64>,
}

/// USD per million tokens as picodollars per token (negative or not finite: 0).
pub fn per_token(usd_per_million: f64) -> u64 {
    let p = usd_per_million * 1_000_000.0;
    if p.is_finite() && p > 0.0 {
        p.round() as u64
    } else {
        0
    }
}

impl Price {
    /// From prices in USD per million tokens; `None` when input or output is unknown.
    pub fn from_per_million(
        input: Option<f64>,
        output: Option<f64>,
        cached_input: Option<f64>,
        cache_write: Option<f64>,
    ) -> Option<Self> {
        Some(Self {
            input: per_token(input?),
            output: per_token(output?),
            cached_input: cached_input.map(per_token),
            cache_write: cache_write.map(per_token),
        })
    }

    pub const FREE: Price = Price { input: 0, output: 0, cached_input: None, cache_write: None };

    /// The cost of `usage` at these prices. Each token is billed once: cached and
    /// cache-written tokens are the part of the prompt they are, reasoning
    /// tokens the part of the completion.
    pub fn cost(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
        let plain = usage.prompt_tokens - cached - written;
        let sum = u128::from(plain) * u128::from(self.input)
            + u128::from(cached) * u128::from(self.cached_input.unwrap_or(self.input))
            + u128::from(written) * u128::from(self.cache_write.unwrap_or(self.input))
            + u128::from(usage.completion_tokens) * u128::from(self.output);
        u64::try_from(sum).unwrap_or(u64::MAX)
    }
}

/// Picodollars as USD (for display; sums are made on picodollars).
pub fn usd(pico: u64) -> f64 {
    pico as f64 / PICO_PER_USD as f64
}

/// Picodollars as a decimal USD text with twelve decimals, trailing zeros cut
/// (`0.000375`), ASCII for a header or an SSE comment.
pub fn usd_text(pico: u64) -> String {
    let mut text = String::with_capacity(24);
    text.push_str(itoa::Buffer::new().format(pico / PICO_PER_USD));
    let mut frac = pico % PICO_PER_USD;
    if frac == 0 {
        return text;
    }
    let mut digits = [b'0'; 12];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let len = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    text.push('.');
    text.extend(digits[..len].iter().map(|&d| char::from(d)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64, written: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            cache_write_tokens: written,
            reasoning_tokens: reasoning,
        }
    }

    #[test]
    fn prices_per_million_become_exact_picodollars_per_token() {
        assert_eq!(per_token(0.15), 150_000);
        assert_eq!(per_token(2.5), 2_500_000);
        assert_eq!(per_token(0.0375), 37_500);
        assert_eq!(per_token(0.0), 0);
        assert_eq!(per_token(-1.0), 0);
        assert_eq!(per_token(f64::NAN), 0);
    }

    #[test]
    fn openai_gpt_4o_mini_with_cache_and_reasoning() {
        // $0.15 in, $0.075 cached in, $0.60 out per million.
        let p = Price::from_per_million(Some(0.15), Some(0.60), Some(0.075), None).unwrap();
        // 2006 prompt of which 1920 cached; 300 completion of which 192 reasoning.
        let c = p.cost(&usage(2006, 300, 1920, 0, 192));
        assert_eq!(c, 86 * 150_000 + 1920 * 75_000 + 300 * 600_000);
        assert_eq!(usd_text(c), "0.0003369");
        // Reasoning is not billed on top of the completion.
        assert_eq!(p.cost(&usage(0, 300, 0, 0, 192)), p.cost(&usage(0, 300, 0, 0, 0)));
    }

    #[test]
    fn anthropic_cache_reads_and_writes_have_their_own_prices() {
        // Claude 3.5 Sonnet: $3 in, $0.30 cache read, $3.75 cache write, $15 out.
        let p = Price::from_per_million(Some(3.0), Some(15.0), Some(0.30), Some(3.75)).unwrap();
        let c = p.cost(&usage(1250, 40, 1000, 200, 0));
        assert_eq!(c, 50 * 3_000_000 + 1000 * 300_000 + 200 * 3_750_000 + 40 * 15_000_000);
        assert_eq!(usd_text(c), "0.0018");
    }

    #[test]
    fn without_a_cache_price_cached_tokens_cost_the_input_price() {
        let p = Price::from_per_million(Some(1.0), Some(2.0), None, None).unwrap();
        assert_eq!(p.cost(&usage(100, 10, 60, 0, 0)), 100 * 1_000_000 + 10 * 2_000_000);
        assert_eq!(Price::FREE.cost(&usage(1000, 1000, 0, 0, 0)), 0);
        assert_eq!(Price::from_per_million(None, Some(1.0), None, None), None);
    }

    #[test]
    fn usd_text_is_exact() {
        assert_eq!(usd_text(0), "0");
        assert_eq!(usd_text(1), "0.000000000001");
        assert_eq!(usd_text(PICO_PER_USD * 3 + 500_000_000_000), "3.5");
        assert_eq!(usd_text(375_000_000), "0.000375");
        assert_eq!(usd_text(PICO_PER_USD * 12), "12");
        assert_eq!(usd_text(u64::MAX), "18446744.073709551615");
        assert_eq!(usd_text(PICO_PER_USD + 10), "1.00000000001");
    }
}
