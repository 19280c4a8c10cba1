//! One module per command; `run` dispatches.

pub mod check;
pub mod config_export;
pub mod explain;
pub mod render_envoy;
pub mod serve;
pub mod usage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use router_core::TableDoc;

use crate::cli::Command;
use crate::config::{Config, ConfigError};
use crate::envoy::RenderError;
use crate::secrets::SecretsError;
use crate::table::ChannelModels;

/// Why a command failed; printed as `smart-router: <this>`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("the config builds a table that does not compile: {0}")]
    Table(#[from] router_core::table::TableError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] crate::usage::StoreError),
    #[error(transparent)]
    Export(#[from] crate::usage::export::ExportError),
    #[error("the admin API's changes do not load over the file: {0}")]
    Overlay(String),
}

pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            runtime.block_on(serve::serve(args.config))
        }
        Command::RenderEnvoy(args) => render_envoy::run(args),
        Command::Check(args) => check::run(&args.config),
        Command::Explain(args) => explain::run(args),
        Command::Usage(command) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
            runtime.block_on(usage::run(command))
        }
        Command::Config(crate::cli::ConfigCommand::Export(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
            runtime.block_on(config_export::run(args))
        }
    }
}

/// What `serve` and `check` print about a config and its table.
pub fn summary(path: &Path, config: &Config, doc: &TableDoc, models: &HashMap<String, ChannelModels>) -> String {
    let mut s = format!(
        "smart-router {}\n  config:        {}\n  control plane: http://{} (filters fetch GET /v1/table)\n  router API:    http://{} (Envoy)\n  strategy:      {} (max_retry_attempts {})\n  auth:          {}\n  channels:      {} enabled\n",
        env!("CARGO_PKG_VERSION"),
        path.display(),
        config.control_plane.listen,
        config.server.listen,
        config.routing.default_strategy,
        config.routing.max_retry_attempts,
        if config.auth.enabled { format!("enabled ({} tokens)", doc.auth.tokens.len()) } else { "disabled".into() },
        doc.channels.len(),
    );
    for c in &doc.channels {
        let source = models.get(&c.id).map(|m| m.source.as_str()).unwrap_or("configured");
        s.push_str(&format!(
            "    {:<20} {:<18} {:<40} {:>5} models ({source}){}\n",
            c.id,
            c.provider,
            format!("{}{}", c.authority, c.path_prefix),
            c.models.len(),
            if c.tags.is_empty() { String::new() } else { format!("  tags: {}", c.tags.join(",")) }
        ));
    }
    let distinct: std::collections::BTreeSet<&str> =
        doc.channels.iter().flat_map(|c| c.models.iter().map(|m| m.id.as_str())).collect();
    s.push_str(&format!("  models:        {} distinct\n  table version: {}", distinct.len(), doc.version));
    s
}
