//! This worker thread's [`UnansweredLedger`] (see there): attempts that ended
//! without a response wait for their request's end, which decides whether they
//! were the channel's fault or the client leaving.

use std::cell::RefCell;

use router_core::flow::UnansweredLedger;

thread_local! {
    static LEDGER: RefCell<UnansweredLedger> = RefCell::new(UnansweredLedger::default());
}

pub fn add(request_id: u64, channel: &str, model: &str) {
    LEDGER.with(|l| l.borrow_mut().add(request_id, channel, model));
}

pub fn take(request_id: u64, responded: bool) -> Vec<(String, String)> {
    LEDGER.with(|l| l.borrow_mut().take(request_id, responded))
}
