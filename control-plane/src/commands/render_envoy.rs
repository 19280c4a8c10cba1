//! `smart-router render-envoy`: the Envoy bootstrap for a config.

use crate::cli::RenderArgs;
use crate::config;
use crate::envoy::{self, RenderOptions};
use crate::secrets::Secrets;

use super::Error;

pub fn run(args: RenderArgs) -> Result<(), Error> {
    let config = config::load(&args.config.config)?;
    let table_token = match args.table_token {
        Some(t) => t,
        None => Secrets::of(&config)?.table_token,
    };
    let absolute =
        |p: &str| std::fs::canonicalize(p).map(|p| p.display().to_string()).unwrap_or_else(|_| p.to_string());
    let yaml = envoy::render(
        &config,
        &RenderOptions {
            wasm_path: absolute(&args.wasm),
            dynamic_module_path: args.dynamic_module.as_deref().map(absolute),
            table_token,
        },
    )?;
    match &args.out {
        Some(out) => std::fs::write(out, yaml).map_err(|source| Error::Write { path: out.clone(), source }),
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}
