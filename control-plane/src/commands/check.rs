//! `smart-router check`: validate a config and print what it would serve,
//! without contacting any provider.

use std::collections::HashMap;
use std::path::Path;

use crate::config;
use crate::table;

use super::Error;

pub fn run(path: &Path) -> Result<(), Error> {
    let config = config::load(path)?;
    let models: HashMap<_, _> = config.channels.iter().map(|c| (c.id.clone(), table::models_for(c, None))).collect();
    let tokens = if config.auth.enabled { vec!["(token)".to_string()] } else { vec![] };
    let doc = table::build(&config, &models, &tokens);
    router_core::Table::compile(doc.clone(), None)?;
    println!("{}", super::summary(path, &config, &doc, &models));
    println!("config OK (models shown are configured_models; serve discovers the rest)");
    Ok(())
}
