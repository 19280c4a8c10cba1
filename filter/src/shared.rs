//! Values every worker VM shares through Envoy's shared data (process-wide per
//! `vm_id`): each worker keeps a decoded copy, re-read on tick only when the CAS
//! token changed, and writes with compare-and-swap so concurrent workers never
//! lose each other's updates.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::host;

/// A value with a text form stored under one shared-data key.
pub trait SharedValue: Default + Clone + 'static {
    fn decode(text: &str) -> Self;
    fn encode(&self) -> String;
}

/// This worker's copy and the CAS token it was read at (None: must re-read).
pub type Local<T> = RefCell<(T, Option<u32>)>;

fn read<T: SharedValue>(key: &str) -> (T, Option<u32>) {
    let (bytes, cas) = host::shared_data_cas(key);
    (bytes.map(|b| T::decode(&String::from_utf8_lossy(&b))).unwrap_or_default(), cas)
}

/// Re-read the shared value if another worker changed it; `fixup` runs on a
/// fresh copy (e.g. to expire old entries).
pub fn refresh<T: SharedValue>(key: &str, local: &'static LocalKey<Local<T>>, fixup: impl FnOnce(&mut T)) {
    let cas = host::shared_data_cas(key).1;
    if local.with(|l| l.borrow().1 == cas && cas.is_some()) {
        return;
    }
    let (mut value, cas) = read::<T>(key);
    fixup(&mut value);
    local.with(|l| *l.borrow_mut() = (value, cas));
}

/// Apply `change` with compare-and-swap, retrying a lost race a few times.
/// Returns the value as written, or None when `change` changed nothing or every
/// try lost its race.
pub fn update<T: SharedValue>(
    key: &str,
    local: &'static LocalKey<Local<T>>,
    mut change: impl FnMut(&mut T) -> bool,
) -> Option<T> {
    for _ in 0..8 {
        let (mut value, cas) = read::<T>(key);
        if !change(&mut value) {
            return None;
        }
        if host::set_shared_data_cas(key, value.encode().as_bytes(), cas) {
            // Our write moved the CAS token; the next tick re-reads it.
            local.with(|l| *l.borrow_mut() = (value.clone(), None));
            return Some(value);
        }
    }
    None
}

impl SharedValue for router_core::health::HealthMap {
    fn decode(text: &str) -> Self {
        Self::decode(text)
    }
    fn encode(&self) -> String {
        self.encode()
    }
}

impl SharedValue for router_core::score::PerfMap {
    fn decode(text: &str) -> Self {
        Self::decode(text)
    }
    fn encode(&self) -> String {
        self.encode()
    }
}
