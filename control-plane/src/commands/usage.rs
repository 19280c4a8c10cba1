//! `smart-router usage export`: one day's usage records as JSON lines.

use std::io::Write;
use std::path::Path;

use crate::cli::UsageCommand;
use crate::config;
use crate::usage::{export, stats, Store};

use super::Error;

pub async fn run(command: UsageCommand) -> Result<(), Error> {
    let UsageCommand::Export(args) = command;
    let config = config::load(&args.config.config)?;
    let tz = jiff::tz::TimeZone::get(&config.statistics.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let store = Store::open(&config.storage.url, &config.control_plane.data_dir).await?;
    let span = stats::day(args.day, &tz);
    let n = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|source| Error::Write { path: path.clone(), source })?;
            let mut w = std::io::BufWriter::new(file);
            let n = export::write_span(&store, &span, &mut w, path).await?;
            w.flush().map_err(|source| Error::Write { path: path.clone(), source })?;
            n
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            let shown = Path::new("standard output");
            let n = export::write_span(&store, &span, &mut w, shown).await?;
            w.flush().map_err(|source| Error::Write { path: shown.to_path_buf(), source })?;
            n
        }
    };
    eprintln!("{n} records for {} ({})", args.day, config.statistics.timezone);
    Ok(())
}
