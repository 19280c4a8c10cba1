//! Account balances, where a provider tells them: OpenRouter's credits,
//! DeepSeek's and SiliconFlow's balances. Fetched with the channel's first key
//! beside each key check, shown in the channel status, and compared with the
//! channel's `low_balance` for an alert.

use serde::Serialize;

use crate::config::ChannelConfig;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Balance {
    pub amount: f64,
    /// As the provider counts it (`USD`, `CNY`).
    pub currency: String,
    pub checked_ms: u64,
}

/// Where the provider of `channel` tells its balance, if it does.
pub fn url(channel: &ChannelConfig) -> Option<String> {
    let base = channel.base_url.trim_end_matches('/');
    match channel.provider.as_str() {
        "openrouter" => Some(format!("{base}/credits")),
        // Its API lives at the host's root and under /v1 alike.
        "deepseek" => Some(format!("{}/user/balance", base.trim_end_matches("/v1"))),
        "siliconflow" => Some(format!("{base}/user/info")),
        _ => None,
    }
}

/// The balance in a provider's answer.
pub fn parse(provider: &str, body: &[u8], now_ms: u64) -> Result<Balance, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let number = |x: &serde_json::Value| x.as_f64().or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()));
    let (amount, currency) = match provider {
        // {"data": {"total_credits": 10, "total_usage": 2.5}}
        "openrouter" => {
            let d = &v["data"];
            let credits = number(&d["total_credits"]).ok_or("no data.total_credits")?;
            (credits - number(&d["total_usage"]).unwrap_or(0.0), "USD".to_string())
        }
        // {"balance_infos": [{"currency": "CNY", "total_balance": "110.00"}, ...]}
        "deepseek" => {
            let infos = v["balance_infos"].as_array().ok_or("no balance_infos")?;
            let first = infos.iter().find(|i| i["currency"] == "USD").or_else(|| infos.first()).ok_or("no balance")?;
            let amount = number(&first["total_balance"]).ok_or("no total_balance")?;
            (amount, first["currency"].as_str().unwrap_or("CNY").to_string())
        }
        // {"data": {"totalBalance": "88.88", ...}}
        "siliconflow" => (number(&v["data"]["totalBalance"]).ok_or("no data.totalBalance")?, "CNY".to_string()),
        other => return Err(format!("provider {other} does not tell a balance")),
    };
    Ok(Balance { amount, currency, checked_ms: now_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_providers_answer_reads_as_its_balance() {
        let b = parse("openrouter", br#"{"data":{"total_credits":10,"total_usage":2.5}}"#, 1).unwrap();
        assert_eq!((b.amount, b.currency.as_str()), (7.5, "USD"));
        let d = br#"{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00","granted_balance":"10.00"}]}"#;
        assert_eq!(parse("deepseek", d, 1).unwrap().amount, 110.0);
        let s = br#"{"code":20000,"data":{"balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88"}}"#;
        assert_eq!(parse("siliconflow", s, 1).unwrap().amount, 88.88);
        assert!(parse("openrouter", b"{}", 1).is_err());
        assert!(parse("groq", b"{}", 1).is_err());
    }
}
