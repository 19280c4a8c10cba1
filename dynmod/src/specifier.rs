//! The `smart_router` cluster specifier: the route's
//! `envoy.router.cluster_specifier_plugin.dynamic_modules` extension. Envoy asks it
//! for a cluster when the route is resolved, again when the router role refreshes
//! the cluster after planning, and again before every retry
//! (`refresh_cluster_on_retry`). It answers from the plan the router role wrote
//! into `smart_router` dynamic metadata and the stream's attempt count, so each
//! attempt reaches its channel's cluster. This replaces Envoy's `priority_group`
//! specifier, whose plan must be a nested `Struct` that costs Envoy far more to
//! parse and merge than one string.
//!
//! It also caps Envoy's retries at the plan (past its end the last cluster would
//! be tried again) by selecting the route-action override `retries_<n>` that
//! `render-envoy` declares for every possible plan length.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use router_core::wire::{attempt_cluster, RETRIES_OVERRIDE_PREFIX};
use serde::Deserialize;

use crate::abi::{self, EnvoyBuffer, ModuleBuffer, SpecifierContext, ATTEMPT_COUNT_ATTRIBUTE};
use router_core::roles::config::{METADATA_NAMESPACE, PLAN_METADATA_KEY};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecifierConfig {
    /// Where a request goes before (or without) a plan: a cluster with no hosts.
    no_channel_cluster: String,
}

/// # Safety
/// Envoy passes buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_config_new(
    _config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let raw = config.as_slice().unwrap_or_default();
    match serde_json::from_slice::<SpecifierConfig>(raw) {
        Ok(c) => Box::into_raw(Box::new(c)) as *const c_void,
        Err(e) => {
            log::error!("smart-router: bad cluster specifier configuration: {e}");
            std::ptr::null()
        }
    }
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_config_destroy(config: *const c_void) {
    if !config.is_null() {
        drop(Box::from_raw(config as *mut SpecifierConfig));
    }
}

/// # Safety
/// `config` is a pointer this module returned from `config_new`; `context` is
/// valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_cluster_specifier_select(
    config: *const c_void,
    context: SpecifierContext,
) -> bool {
    let Some(config) = (config as *const SpecifierConfig).as_ref() else {
        return false;
    };
    // A panic keeps Envoy's previous choice (or the no-channel cluster): one
    // request fails instead of the process.
    catch_unwind(AssertUnwindSafe(|| {
        let choice = handed_over().or_else(|| plan(context)).and_then(|text| attempt_cluster(text, attempt(context)));
        let cluster = choice.map_or(config.no_channel_cluster.as_str(), |(cluster, _)| cluster);
        abi::envoy_dynamic_module_callback_cluster_specifier_set_cluster_name(
            context,
            ModuleBuffer::of(cluster.as_bytes()),
        );
        // A selection replaces the previous one whole: state the retry cap each time.
        if let Some((_, attempts)) = choice {
            let mut name = [0u8; 32];
            let name = retries_override(&mut name, attempts - 1);
            if !abi::envoy_dynamic_module_callback_cluster_specifier_set_route_action_override(
                context,
                ModuleBuffer::of(name.as_bytes()),
            ) {
                warn_once(name);
            }
        }
        true
    }))
    .unwrap_or(false)
}

/// `retries_<n>` written into `buf` (no allocation on the request path).
fn retries_override(buf: &mut [u8; 32], n: usize) -> &str {
    let prefix = RETRIES_OVERRIDE_PREFIX.as_bytes();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    let len = prefix.len() + digits.len();
    buf[..prefix.len()].copy_from_slice(prefix);
    buf[prefix.len()..len].copy_from_slice(digits);
    std::str::from_utf8(&buf[..len]).unwrap_or(RETRIES_OVERRIDE_PREFIX)
}

/// The plan has more attempts than `render-envoy` declared overrides for (the
/// Envoy config is older than the table): Envoy keeps the route's own count.
fn warn_once(name: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "smart-router: the route has no route-action override {name}; re-render the Envoy config (retries stay at the route's count)"
        );
    }
}

thread_local! {
    /// The plan the router role is refreshing the route's cluster for, on this
    /// worker thread, while Envoy calls `select` from inside that refresh.
    static HANDOFF: std::cell::Cell<Option<*const str>> = const { std::cell::Cell::new(None) };
}

/// Run `refresh` (the router role's `clear_route_cluster_cache`, during which
/// Envoy calls `select` on this thread) with `plan` handed to the specifier
/// directly: the plan was just written to dynamic metadata, and reading it back
/// through Envoy costs more than the rest of the selection. Retries, later, read
/// the metadata.
pub(crate) fn with_plan_handed_over<R>(plan: &str, refresh: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            HANDOFF.set(None);
        }
    }
    HANDOFF.set(Some(plan as *const str));
    let _clear = Clear;
    refresh()
}

/// The plan handed over by [`with_plan_handed_over`], if `select` runs inside it.
fn handed_over<'a>() -> Option<&'a str> {
    let plan = HANDOFF.get()?;
    // SAFETY: set from a `&str` that outlives the refresh, and cleared when it ends.
    Some(unsafe { &*plan })
}

/// The plan text, valid until `select` returns.
unsafe fn plan<'a>(context: SpecifierContext) -> Option<&'a str> {
    let mut out = EnvoyBuffer::NULL;
    if !abi::envoy_dynamic_module_callback_cluster_specifier_get_dynamic_metadata(
        context,
        ModuleBuffer::of(METADATA_NAMESPACE.as_bytes()),
        ModuleBuffer::of(PLAN_METADATA_KEY.as_bytes()),
        &mut out,
    ) {
        return None;
    }
    std::str::from_utf8(out.as_slice()?).ok()
}

/// Which attempt the cluster is for (1 for the first; the count reads 0 before the
/// first attempt starts).
unsafe fn attempt(context: SpecifierContext) -> usize {
    let mut n = 0u64;
    if !abi::envoy_dynamic_module_callback_cluster_specifier_get_attribute_int(context, ATTEMPT_COUNT_ATTRIBUTE, &mut n)
    {
        return 1;
    }
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}
