//! What a handler's [`Context`](crate::Context) and extractors see of the
//! route they run on. The pipeline fills it in; the handler layer reads it.

use crate::store::Store;
use crate::transport::Transport;
use std::sync::Arc;

/// What a handler's [`Context`](crate::Context) needs of its route.
pub(crate) struct RouteShared {
    pub(crate) queue: Arc<str>,
    pub(crate) handler_name: Arc<str>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_attempts: u32,
}

/// Store keys are scoped by queue: the same idempotency key or session id on
/// two queues names two different things.
pub(crate) fn scoped_key(queue: &str, key: &str) -> String {
    let mut scoped = String::with_capacity(queue.len() + 1 + key.len());
    scoped.push_str(queue);
    scoped.push('/');
    scoped.push_str(key);
    scoped
}
