//! `sar-bench resolve`: table build time and model resolution time on synthetic
//! tables shaped like real deployments (aggregators sharing catalogues, `:free`
//! variants, vendor prefixes, dated names, free and local channels).

use std::collections::BTreeMap;
use std::time::Instant;

use router_core::resolve::{resolve, Mode};
use router_core::table::{AuthDoc, ChannelDoc, ModelDoc, RoutingDoc, TableDoc, SCHEMA};
use router_core::Table;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const VENDORS: &[&str] =
    &["qwen", "meta-llama", "openai", "anthropic", "deepseek", "mistralai", "google", "moonshotai", "zhipu", "01-ai"];
const FAMILIES: &[&str] =
    &["qwen3", "llama-3.1", "gpt-4o", "claude-3", "deepseek-v3", "mistral", "gemma-3", "kimi", "glm-4.5", "yi"];
const SIZES: &[&str] = &["0.6b", "1.7b", "4b", "8b", "14b", "32b", "70b", "235b-a22b", "mini", "turbo", "pro", "flash"];
const SUFFIXES: &[&str] = &["", "", "", ":free", "-instruct", "-chat", "-20240307", "-coder", "-vl", ":beta"];

fn model_name(rng: &mut Rng, catalogue: usize) -> String {
    // Names drawn from a catalogue of `catalogue` distinct models, so channels overlap.
    let n = rng.below(catalogue);
    let v = VENDORS[n % VENDORS.len()];
    let f = FAMILIES[(n / 7) % FAMILIES.len()];
    let s = SIZES[(n / 3) % SIZES.len()];
    let x = SUFFIXES[(n / 11) % SUFFIXES.len()];
    format!("{v}/{f}-{s}-r{}{x}", n % 97)
}

pub fn synthetic(channels: usize, models_per_channel: usize, catalogue: usize) -> TableDoc {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let channels = (0..channels)
        .map(|i| {
            let mut names: Vec<String> = (0..models_per_channel).map(|_| model_name(&mut rng, catalogue)).collect();
            names.sort();
            names.dedup();
            let mut aliases = BTreeMap::new();
            aliases.insert(format!("std-model-{}", i % 50), names[0].clone());
            ChannelDoc {
                id: format!("ch{i:04}"),
                name: String::new(),
                provider: "openai_compatible".into(),
                cluster: format!("channel_ch{i:04}"),
                authority: "127.0.0.1:1".into(),
                path_prefix: "/v1".into(),
                auth_header: "authorization".into(),
                auth_value: "Bearer x".into(),
                tags: match i % 5 {
                    0 => vec!["free".into()],
                    1 => vec!["local".into()],
                    _ => vec!["cloud".into()],
                },
                priority: (i % 7) as i32,
                weight: 1,
                healthy: true,
                key_ok_ms: 0,
                models: names.into_iter().map(|id| ModelDoc { id, ..Default::default() }).collect(),
                aliases,
                pricing_policies: vec![],
                limits: None,
                keys: vec![],
                key_rotation: Default::default(),
            }
        })
        .collect();
    TableDoc {
        schema: SCHEMA,
        version: "bench".into(),
        routing: RoutingDoc::default(),
        auth: AuthDoc::default(),
        channels,
        groups: vec![],
        usage: Default::default(),
        budgets: vec![],
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

pub fn run() -> Result<serde_json::Value, String> {
    let mut out = Vec::new();
    for (label, channels, per_channel, catalogue) in
        [("38 channels / 3,400 models", 38, 90, 2_000), ("1,000 channels / 100,000 models", 1_000, 100, 20_000)]
    {
        let doc = synthetic(channels, per_channel, catalogue);
        let json = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let table = Table::from_json(&json, None).map_err(|e| e.to_string())?;
        let build_ms = start.elapsed().as_secs_f64() * 1e3;
        let models = table.entries.len();
        let sample = table.entries.get(models / 2).map(|e| e.id.clone()).unwrap_or_default();
        let queries = [
            ("exact", sample.clone()),
            ("core name", "qwen3-8b-r5".to_string()),
            ("alias", "std-model-7".to_string()),
            ("tags", "tag:qwen3,free,!local".to_string()),
            ("tags, one common", "tag:free".to_string()),
            ("group", "auto:free".to_string()),
            ("name as tags", "kimi-free".to_string()),
            ("unknown tag", "tag:nosuchtag".to_string()),
        ];
        let mut per_query = serde_json::Map::new();
        let mut all = Vec::new();
        for (name, q) in &queries {
            let mut times = Vec::with_capacity(2_000);
            for _ in 0..2_000 {
                let t = Instant::now();
                let r = resolve(&table, q, Mode::route(4));
                times.push(t.elapsed().as_secs_f64() * 1e6);
                std::hint::black_box(r.ok());
            }
            times.sort_by(f64::total_cmp);
            all.extend_from_slice(&times);
            per_query.insert(
                (*name).to_string(),
                serde_json::json!({"query": q, "p50_us": percentile(&times, 0.5), "p99_us": percentile(&times, 0.99)}),
            );
        }
        all.sort_by(f64::total_cmp);
        out.push(serde_json::json!({
            "table": label,
            "channels": channels,
            "models": models,
            "table_json_mb": json.len() as f64 / 1e6,
            "build_ms": build_ms,
            "resolve_p50_us": percentile(&all, 0.5),
            "resolve_p99_us": percentile(&all, 0.99),
            "queries": per_query,
        }));
    }
    Ok(serde_json::Value::Array(out))
}
