//! `smart-router`: the control plane of Smart AI Router. This file is wiring only.

mod config;
mod discovery;
mod log;
mod render;
mod serve;
mod server;
mod table;
mod tokens;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
smart-router: control plane of Smart AI Router (an LLM API router built on Envoy)

USAGE:
    smart-router serve        --config FILE
    smart-router render-envoy --config FILE [--wasm PATH | --dynamic-module PATH] [--out FILE]
    smart-router check        --config FILE
    smart-router explain      --config FILE [--offline] MODEL
    smart-router --help | --version

COMMANDS:
    serve          Load and validate FILE, discover each channel's models
                   (GET {base_url}/models, falling back to configured_models),
                   serve the channel table to Envoy on control_plane.listen
                   (default 127.0.0.1:7602) and republish it within a second
                   when FILE changes. A bad edit keeps the last good table.
    render-envoy   Write the Envoy bootstrap for FILE: the API listener
                   (server.listen, default 127.0.0.1:7601), admin
                   (server.admin, default 127.0.0.1:9901), one cluster per
                   enabled channel, the router filters. Re-render and restart
                   Envoy after adding or removing channels.
    check          Validate FILE and print a summary without contacting
                   any provider. Exit status 1 with the error when invalid.
    explain        Show how MODEL (a name, alias, `tag:a,b,!c` query or
                   `auto:` group) resolves: the parsed query, every candidate
                   in order with its facts, and what was left out and why.
                   Runs the routing code on the table FILE gives after one
                   model discovery (--offline: configured_models only). A
                   running control plane answers the same at
                   POST /admin/v1/explain with {\"model\": \"...\"}.

OPTIONS:
    --config FILE  The router's YAML config (see examples/router.yaml).
    --wasm PATH    The filter built for wasm32-wasip1
                   [default: target/wasm32-wasip1/release/router_filter.wasm]
    --dynamic-module PATH
                   Route with the native Envoy dynamic module instead
                   (target/release/libsmart_router.so; Linux, built for
                   this Envoy version). Same behaviour, less CPU; the
                   wasm filter stays the portable choice (Istio).
    --out FILE     Write to FILE instead of standard output.
    --offline      explain: skip discovery, use configured_models.
";

struct Args {
    command: String,
    config: Option<PathBuf>,
    wasm: String,
    dynamic_module: Option<String>,
    out: Option<PathBuf>,
    offline: bool,
    positional: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = argv.next().ok_or("no command given")?;
    let mut args = Args {
        command,
        config: None,
        wasm: "target/wasm32-wasip1/release/router_filter.wasm".into(),
        dynamic_module: None,
        out: None,
        offline: false,
        positional: Vec::new(),
    };
    while let Some(flag) = argv.next() {
        if flag == "--offline" {
            args.offline = true;
            continue;
        }
        // A model query like `tag:a,!b` is positional; only --flags and -c/-o are options.
        if !flag.starts_with("--") && flag != "-c" && flag != "-o" {
            args.positional.push(flag);
            continue;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| argv.next()).ok_or(format!("{name} needs a value"));
        match name.as_str() {
            "--config" | "-c" => args.config = Some(PathBuf::from(value()?)),
            "--wasm" => args.wasm = value()?,
            "--dynamic-module" => args.dynamic_module = Some(value()?),
            "--out" | "-o" => args.out = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    match argv.peek().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("smart-router {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("smart-router: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smart-router: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let config_path = || args.config.clone().ok_or_else(|| format!("{} needs --config FILE", args.command));
    match args.command.as_str() {
        "serve" => {
            let path = config_path()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            runtime.block_on(serve::serve(path))
        }
        "render-envoy" => {
            let path = config_path()?;
            let config = config::load(&path).map_err(|e| e.to_string())?;
            let secrets = serve::secrets(&config)?;
            let absolute =
                |p: &str| std::fs::canonicalize(p).map(|p| p.display().to_string()).unwrap_or_else(|_| p.to_string());
            let yaml = render::render(
                &config,
                &render::RenderOptions {
                    wasm_path: absolute(&args.wasm),
                    dynamic_module_path: args.dynamic_module.as_deref().map(absolute),
                    table_token: secrets.table_token,
                },
            )?;
            match &args.out {
                Some(out) => std::fs::write(out, yaml).map_err(|e| format!("cannot write {}: {e}", out.display())),
                None => {
                    print!("{yaml}");
                    Ok(())
                }
            }
        }
        "check" => {
            let path = config_path()?;
            let config = config::load(&path).map_err(|e| e.to_string())?;
            let models: HashMap<_, _> =
                config.channels.iter().map(|c| (c.id.clone(), table::models_for(c, None))).collect();
            let tokens = if config.auth.enabled { vec!["(token)".to_string()] } else { vec![] };
            let doc = table::build(&config, &models, &tokens);
            router_core::Table::compile(doc.clone(), None).map_err(|e| e.to_string())?;
            println!("{}", serve::summary(&path, &config, &doc, &models));
            println!("config OK (models shown are configured_models; serve discovers the rest)");
            Ok(())
        }
        "explain" => {
            let path = config_path()?;
            let [model] = args.positional.as_slice() else {
                return Err("explain needs exactly one MODEL argument".into());
            };
            let config = config::load(&path).map_err(|e| e.to_string())?;
            let discovered = if args.offline { HashMap::new() } else { discover_all(&config) };
            let models: HashMap<_, _> =
                config.channels.iter().map(|c| (c.id.clone(), table::models_for(c, discovered.get(&c.id)))).collect();
            let doc = table::build(&config, &models, &[]);
            let compiled = router_core::Table::compile(doc, None).map_err(|e| e.to_string())?;
            let v = router_core::resolve::explain_json(&compiled, model);
            println!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?);
            Ok(())
        }
        other => Err(format!("unknown command \"{other}\" (see --help)")),
    }
}

/// One discovery round over every enabled channel, in parallel threads.
fn discover_all(config: &config::Config) -> HashMap<String, Vec<router_core::table::ModelDoc>> {
    let timeout = std::time::Duration::from_secs(config.control_plane.discovery_timeout);
    let client = discovery::Client::new(&config.server.ca_file, timeout);
    let handles: Vec<_> = config
        .channels
        .iter()
        .filter(|c| c.enabled && c.discover)
        .cloned()
        .map(|c| {
            let client = client.clone();
            std::thread::spawn(move || (c.id.clone(), client.discover(&c)))
        })
        .collect();
    let mut found = HashMap::new();
    for h in handles {
        match h.join() {
            Ok((id, Ok(models))) => {
                found.insert(id, models);
            }
            Ok((id, Err(e))) => eprintln!("channel {id}: discovery failed ({e}); using configured_models"),
            Err(_) => {}
        }
    }
    found
}
