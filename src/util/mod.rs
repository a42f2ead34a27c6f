//! Small utilities the layers share, that know nothing of wharf's
//! semantics: boxed futures, id generation, id-keyed maps, secrets masked
//! in URLs, message text cut to a size fit for a log line, and the
//! synchronisation primitives the loom models swap out.

pub(crate) mod future;
pub(crate) mod id_map;
pub(crate) mod ids;
pub(crate) mod log_text;
pub(crate) mod redact;
pub(crate) mod sync;
