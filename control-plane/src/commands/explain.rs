//! `smart-router explain`: how a model query resolves, by the routing code itself.

use std::collections::HashMap;
use std::time::Duration;

use router_core::table::ModelDoc;

use crate::cli::ExplainArgs;
use crate::config::{self, Config};
use crate::discovery;
use crate::table;

use super::Error;

pub fn run(args: ExplainArgs) -> Result<(), Error> {
    let config = config::load(&args.config.config)?;
    let discovered = if args.offline { HashMap::new() } else { discover_all(&config) };
    let models: HashMap<_, _> =
        config.channels.iter().map(|c| (c.id.clone(), table::models_for(c, discovered.get(&c.id)))).collect();
    let doc = table::build(&config, &models, &[]);
    let compiled = router_core::Table::compile(doc, None)?;
    let v = router_core::resolve::explain_json(&compiled, &args.model);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// One discovery round over every enabled channel, in parallel threads.
fn discover_all(config: &Config) -> HashMap<String, Vec<ModelDoc>> {
    let timeout = Duration::from_secs(config.control_plane.discovery_timeout);
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
