//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// The control plane of Smart AI Router, an LLM API router built on Envoy: it
/// reads the router's YAML config, discovers each channel's models, serves the
/// channel table to Envoy and writes Envoy's bootstrap.
#[derive(Debug, Parser)]
#[command(name = "smart-router", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (levels come from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SAR_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: serve the channel table to Envoy on
    /// control_plane.listen (default 127.0.0.1:7602), rediscover models, and
    /// republish within a second when the config file changes. A bad edit keeps
    /// the last good table.
    Serve(ConfigArg),
    /// Write the Envoy bootstrap for the config: the API listener (server.listen,
    /// default 127.0.0.1:7601), admin (server.admin, default 127.0.0.1:9901), the
    /// router filters, and cluster discovery from the control plane (channels
    /// come and go without a new bootstrap or a restart).
    RenderEnvoy(RenderArgs),
    /// Validate the config and print a summary, without contacting any provider.
    /// Exit status 1 with the error when it is invalid.
    Check(ConfigArg),
    /// Show how a model query (a name, an alias, `tag:a,b,!c` or an `auto:` group)
    /// resolves: every candidate in order with its facts and score, and what was
    /// left out and why. Runs the routing code on the table the config gives after
    /// one model discovery. A running control plane answers the same at
    /// POST /admin/v1/explain.
    Explain(ExplainArgs),
    /// Usage records in the store the config names (storage.url, else
    /// SQLite in control_plane.data_dir).
    #[command(subcommand)]
    Usage(UsageCommand),
    /// The configuration in force.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write the effective configuration as YAML: the file with every change
    /// made through the admin API (kept in the store) laid over it. Loading the
    /// result as the file gives the same table. It holds keys sent through the
    /// API as they are (the file's `${ENV}` references stay references).
    Export(ConfigExportArgs),
}

#[derive(Debug, Args)]
pub struct ConfigExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Write one day's records as JSON lines (one record a line, oldest first,
    /// as GET /admin/v1/usage shows them). The day is counted in
    /// statistics.timezone (default UTC).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The day, as YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub day: jiff::civil::Date,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The router's YAML config (see examples/router.yaml).
    #[arg(long, short, env = "SAR_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The filter built for wasm32-wasip1.
    #[arg(long, value_name = "PATH", default_value = "target/wasm32-wasip1/release/router_filter.wasm")]
    pub wasm: String,
    /// Route with the native Envoy dynamic module at PATH instead of the wasm filter
    /// (target/release/libsmart_router.so; Linux, built for this Envoy version).
    /// Same behaviour, less CPU; the wasm filter stays the portable choice (Istio).
    #[arg(long, value_name = "PATH")]
    pub dynamic_module: Option<String>,
    /// The table token Envoy presents to the control plane [default: the
    /// config's control_plane.table_token, else the one generated in data_dir].
    #[arg(long, value_name = "TOKEN")]
    pub table_token: Option<String>,
    /// Write to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Skip discovery: use each channel's configured_models.
    #[arg(long)]
    pub offline: bool,
    /// The model query, as a client would put it in `model`.
    pub model: String,
}
