//! Envoy's log (`[dynamic_modules]` logger). Messages are formatted only when Envoy
//! would print them.

use crate::abi::{self, LogLevel, ModuleBuffer};

fn log(level: LogLevel, message: &str) {
    // SAFETY: plain C calls; the message outlives the call and Envoy copies it.
    unsafe {
        if abi::envoy_dynamic_module_callback_log_enabled(level) {
            abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes()));
        }
    }
}

pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

pub fn error(message: &str) {
    log(LogLevel::Error, message);
}
