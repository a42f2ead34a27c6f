//! Small utilities the layers share, that know nothing of wharf's
//! semantics: boxed futures, id-keyed maps, secrets masked in URLs, and
//! message text cut to a size fit for a log line.

pub(crate) mod future;
pub(crate) mod id_map;
pub(crate) mod log_text;
pub(crate) mod redact;
