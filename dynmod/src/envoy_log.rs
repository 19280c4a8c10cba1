//! The `log` facade on Envoy's log (`[dynamic_modules]` logger): the roles in
//! `router-core` log through `log::warn!` and friends, and a message is
//! formatted only when Envoy would print it.

use crate::abi::{self, LogLevel, ModuleBuffer};

struct EnvoyLog;

static LOGGER: EnvoyLog = EnvoyLog;

fn level(l: log::Level) -> LogLevel {
    match l {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: a plain C call.
        unsafe { abi::envoy_dynamic_module_callback_log_enabled(level(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        // SAFETY: the message outlives the call and Envoy copies it.
        unsafe { abi::envoy_dynamic_module_callback_log(level(record.level()), ModuleBuffer::of(message.as_bytes())) }
    }

    fn flush(&self) {}
}

/// Send `log` records to Envoy (once per process; later calls do nothing).
pub fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
