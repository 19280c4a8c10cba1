//! `smart-router`: the control plane of Smart AI Router. This file is wiring:
//! the command line, logging, and the command.

mod admin;
mod alerts;
mod api;
mod budgets;
mod cli;
mod clusters;
mod commands;
mod config;
mod discovery;
mod envoy;
mod limits;
mod pricing;
mod reports;
mod secrets;
mod table;
mod telemetry;
mod usage;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(cli.log_format);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smart-router: {e}");
            ExitCode::FAILURE
        }
    }
}
