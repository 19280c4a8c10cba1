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
    let mut tokens = crate::secrets::configured_client_tokens(&config);
    if config.auth.enabled && tokens.is_empty() {
        // serve generates one.
        tokens.push(crate::secrets::plain("(generated)"));
    }
    let doc = table::build(&config, &models, &tokens);
    router_core::Table::compile(doc.clone(), None)?;
    println!("{}", super::summary(path, &config, &doc, &models));
    println!("config OK (models shown are configured_models; serve discovers the rest)");
    Ok(())
}
