//! `smart-router config export`: the file with the admin API's stored changes
//! laid over it, as YAML.

use crate::cli::ConfigExportArgs;
use crate::{admin, config};

use super::Error;

pub async fn run(args: ConfigExportArgs) -> Result<(), Error> {
    let path = &args.config.config;
    let file = config::load(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let store = crate::usage::Store::open(&file.storage.url, &file.control_plane.data_dir).await?;
    let overlays = store.admin_objects().await?;
    let value = admin::file_value(&text).map_err(Error::Overlay)?;
    let effective = admin::effective(&value, &overlays);
    let yaml = admin::to_yaml(&effective).map_err(Error::Overlay)?;
    // What is written must load as it would in serve.
    config::parse(&yaml, "the exported config", &|name| std::env::var(name).ok())?;
    let out = format!(
        "# Exported by `smart-router config export` from {} and {} change(s) made through the admin API.\n{yaml}",
        path.display(),
        overlays.len()
    );
    match &args.out {
        Some(p) => std::fs::write(p, out).map_err(|source| Error::Write { path: p.clone(), source }),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}
