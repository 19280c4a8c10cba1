//! Smart AI Router as a proxy-wasm filter for Envoy.
//!
//! One wasm binary plays four roles, chosen by the plugin configuration's `role`
//! (`router_core::roles::config::FilterConfig`):
//!
//! - `service`: the singleton that fetches the channel table (`service`);
//! - `router`: the downstream filter (`router_core::roles::RouterRole`);
//! - `clear_route`: after `header_to_metadata`, makes Envoy match the route again
//!   so the first attempt follows the plan (the route was matched before the plan
//!   existed, and wasm cannot write metadata itself);
//! - `attempt`: the upstream filter, once per attempt (`router_core::roles::AttemptRole`).
//!
//! The roles live in `router-core`; this crate forwards proxy-wasm's callbacks to
//! them and gives them Envoy through `host::WasmHost` and `vm::Vm`.

mod host;
mod service;
mod vm;

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use router_core::roles::config::{FilterConfig, RouterConfig};
use router_core::roles::{AttemptRole, RouterRole, Shared, Step};
use router_core::Table;

use host::WasmHost;
use vm::Vm;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn action(step: Step) -> Action {
    match step {
        Step::Continue => Action::Continue,
        Step::Stop => Action::Pause,
    }
}

#[derive(Default)]
struct Root {
    role: Option<RootRole>,
}

enum RootRole {
    // (Boxed: the fetcher is large and there is one per VM.)
    Service(Box<service::TableFetcher>),
    Router { max_body_bytes: usize, num_retries: Option<usize> },
    Attempt,
    ClearRoute,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(RootRole::Service(fetcher)) = &mut self.role {
            fetcher.on_http_call_response(token, body_size);
        }
    }
}

impl Root {
    fn service(&mut self) -> Option<&mut service::TableFetcher> {
        match &mut self.role {
            Some(RootRole::Service(f)) => Some(f),
            _ => None,
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = host::plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::from_json(&raw) {
            Ok(c) => c,
            Err(e) => {
                log::error!("smart-router: bad plugin configuration: {e}");
                return false;
            }
        };
        self.role = Some(match config {
            FilterConfig::Service(c) => {
                let mut fetcher = service::TableFetcher::new(c);
                fetcher.poll();
                RootRole::Service(Box::new(fetcher))
            }
            FilterConfig::Router(RouterConfig { clusters, max_body_bytes, num_retries, .. }) => {
                vm::set_known_clusters(clusters);
                Self::start_worker();
                RootRole::Router { max_body_bytes, num_retries }
            }
            FilterConfig::Attempt(_) => {
                Self::start_worker();
                RootRole::Attempt
            }
            FilterConfig::ClearRoute(_) => RootRole::ClearRoute,
        });
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(f) = self.service() {
            f.on_queue_ready(queue_id);
        }
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Some(RootRole::Service(fetcher)) => {
                fetcher.poll();
                vm::flush_stats();
            }
            Some(RootRole::Router { .. } | RootRole::Attempt) => vm::tick(),
            Some(RootRole::ClearRoute) | None => {}
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        match self.role {
            Some(RootRole::Router { max_body_bytes, num_retries }) => {
                Some(Box::new(RouterContext { role: RouterRole::new(max_body_bytes), num_retries }))
            }
            Some(RootRole::Attempt) => Some(Box::new(AttemptContext { role: AttemptRole::default() })),
            Some(RootRole::ClearRoute) => Some(Box::new(ClearRoute)),
            _ => None,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// A worker VM's router or attempt root: tables and health reach it within a tick.
    fn start_worker() {
        host::set_tick_period(Duration::from_millis(100));
        vm::tick();
    }
}

/// The `clear_route` role: one host call per chat request.
struct ClearRoute;

impl Context for ClearRoute {}

impl HttpContext for ClearRoute {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        host::clear_route_cache();
        Action::Continue
    }
}

struct RouterContext {
    role: RouterRole<Rc<Table>>,
    num_retries: Option<usize>,
}

impl RouterContext {
    fn host(&self, body_size: usize, whole_response_map: bool) -> WasmHost {
        WasmHost::for_router(body_size, self.num_retries, whole_response_map)
    }
}

impl Context for RouterContext {
    fn on_done(&mut self) -> bool {
        self.role.on_done(&Vm);
        true
    }
}

impl HttpContext for RouterContext {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let mut host = self.host(0, false);
        let step = self.role.on_request_headers(&mut host, end_of_stream);
        host.finish();
        action(step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut host = self.host(body_size, false);
        let step = self.role.on_request_body(&mut host, end_of_stream);
        host.finish();
        action(step)
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let debug_headers = Vm.table().is_some_and(|t| t.routing.debug_headers);
        let mut host = self.host(0, debug_headers);
        let step = self.role.on_response_headers(&mut host);
        host.finish();
        action(step)
    }
}

struct AttemptContext {
    role: AttemptRole<Rc<Table>>,
}

impl Context for AttemptContext {
    /// Envoy calls this once per attempt (`on_log` is not called for upstream filters).
    fn on_done(&mut self) -> bool {
        self.role.on_done();
        true
    }
}

impl HttpContext for AttemptContext {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        action(self.role.on_request_headers(&mut WasmHost::new(0)))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.role.on_request_body(&mut WasmHost::new(body_size), end_of_stream))
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        action(self.role.on_response_headers(&mut WasmHost::new(0), end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.role.on_response_body(&mut WasmHost::new(body_size), end_of_stream))
    }
}
