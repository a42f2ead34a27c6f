//! How the broker keeps a route's queues: RabbitMQ's work-queue type and
//! JetStream's replicas and storage ([`Topology`]), chosen per route
//! ([`RouteOptions`](crate::RouteOptions)), as the app's default
//! ([`App`](crate::App), [`Config`](crate::Config)) and, for the queue type,
//! broker-wide in the RabbitMQ URL (`?queue_type=quorum`).

use crate::error::{BrokerError, BrokerErrorKind};
use std::fmt;
use std::str::FromStr;

/// The most replicas a JetStream stream may have.
pub const MAX_STREAM_REPLICAS: usize = 5;

/// The type of a RabbitMQ work queue. Its dead-letter and delay queues
/// are classic queues either way (`docs/amqp.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueType {
    /// A classic queue, kept on one node (the default).
    Classic,
    /// A quorum queue, replicated across the cluster's nodes (Raft). No
    /// priorities on RabbitMQ 3.10: a route with
    /// [`priority`](crate::RouteOptions::priority) is refused.
    Quorum,
}

impl QueueType {
    /// `classic` or `quorum`, as RabbitMQ's `x-queue-type` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueType {
    type Err = BrokerError;

    /// `classic` or `quorum`, in any case, around spaces.
    fn from_str(value: &str) -> Result<Self, BrokerError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!("{value:?} is not a queue type: expected classic or quorum"),
            )),
        }
    }
}

/// Where a JetStream stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamStorage {
    /// On disk (the default): survives a server restart.
    File,
    /// In memory: faster, and lost when every server holding a replica
    /// restarts.
    Memory,
}

impl StreamStorage {
    /// `file` or `memory`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStorage::File => "file",
            StreamStorage::Memory => "memory",
        }
    }
}

impl fmt::Display for StreamStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StreamStorage {
    type Err = BrokerError;

    /// `file` or `memory`, in any case, around spaces.
    fn from_str(value: &str) -> Result<Self, BrokerError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(StreamStorage::File),
            "memory" => Ok(StreamStorage::Memory),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!("{value:?} is not a stream storage: expected file or memory"),
            )),
        }
    }
}

/// How the broker keeps a route's queues. Each setting is `None` when not
/// chosen here: a route's [`RouteOptions`](crate::RouteOptions) settings
/// win over the app's defaults ([`App::queue_type`](crate::App::queue_type)
/// and the like, or [`Config`](crate::Config) from the environment), which
/// win over the broker's: for the queue type the RabbitMQ URL's
/// `?queue_type=`, else classic; for streams one replica on file.
///
/// Declaring a queue that exists with other settings is an error naming
/// both and the way out, never a silent divergence: RabbitMQ cannot change
/// a queue's type, and wharf does not move a stream. On NATS a setting
/// nobody chose is not checked: an existing stream is used as it is (as
/// an operator may have changed it), and a new one gets one replica on
/// file.
///
/// ```
/// use wharf::{QueueType, StreamStorage, Topology};
///
/// let route = Topology::new().queue_type(QueueType::Quorum);
/// let app = Topology::new().stream_replicas(3).queue_type(QueueType::Classic);
/// let used = route.or(app);
/// assert_eq!(used.queue_type, Some(QueueType::Quorum));
/// assert_eq!(used.stream_replicas, Some(3));
/// assert_eq!(used.stream_storage, None::<StreamStorage>);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Topology {
    /// RabbitMQ: the type of the work queue.
    pub queue_type: Option<QueueType>,
    /// JetStream: replicas of the work, delay and dead-letter streams,
    /// 1 to [`MAX_STREAM_REPLICAS`]. More than one needs a cluster with as
    /// many JetStream servers.
    pub stream_replicas: Option<usize>,
    /// JetStream: storage of the work, delay and dead-letter streams.
    pub stream_storage: Option<StreamStorage>,
}

impl Topology {
    /// Nothing chosen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Topology::queue_type`].
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = Some(queue_type);
        self
    }

    /// Sets [`Topology::stream_replicas`] (checked when the queue is
    /// declared: 1 to [`MAX_STREAM_REPLICAS`]).
    pub fn stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_replicas = Some(replicas);
        self
    }

    /// Sets [`Topology::stream_storage`].
    pub fn stream_storage(mut self, storage: StreamStorage) -> Self {
        self.stream_storage = Some(storage);
        self
    }

    /// These settings, and `defaults`' where these have none.
    pub fn or(self, defaults: Topology) -> Topology {
        Topology {
            queue_type: self.queue_type.or(defaults.queue_type),
            stream_replicas: self.stream_replicas.or(defaults.stream_replicas),
            stream_storage: self.stream_storage.or(defaults.stream_storage),
        }
    }

    /// A [`BrokerErrorKind::Config`] error when a setting is out of range
    /// (replicas other than 1 to [`MAX_STREAM_REPLICAS`]).
    pub fn check(&self) -> Result<(), BrokerError> {
        match self.stream_replicas {
            Some(replicas) if !(1..=MAX_STREAM_REPLICAS).contains(&replicas) => Err(BrokerError::new(
                BrokerErrorKind::Config,
                format!("stream replicas must be 1 to {MAX_STREAM_REPLICAS}, not {replicas}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_nothing_else_does() {
        assert_eq!(" Quorum ".parse::<QueueType>().unwrap(), QueueType::Quorum);
        assert_eq!("classic".parse::<QueueType>().unwrap(), QueueType::Classic);
        assert_eq!("MEMORY".parse::<StreamStorage>().unwrap(), StreamStorage::Memory);
        assert_eq!("file".parse::<StreamStorage>().unwrap(), StreamStorage::File);
        for bad in ["stream", "", "quorum queue"] {
            let error = bad.parse::<QueueType>().unwrap_err();
            assert_eq!(error.kind(), BrokerErrorKind::Config);
            assert!(error.to_string().contains("classic or quorum"), "{error}");
        }
        assert!("disk".parse::<StreamStorage>().is_err());
        assert_eq!(QueueType::Quorum.to_string(), "quorum");
        assert_eq!(StreamStorage::Memory.to_string(), "memory");
    }

    #[test]
    fn a_route_setting_wins_over_the_default() {
        let app = Topology::new()
            .queue_type(QueueType::Quorum)
            .stream_replicas(3)
            .stream_storage(StreamStorage::Memory);
        assert_eq!(Topology::new().or(app), app);
        let route = Topology::new().queue_type(QueueType::Classic).stream_replicas(1);
        assert_eq!(
            route.or(app),
            Topology {
                queue_type: Some(QueueType::Classic),
                stream_replicas: Some(1),
                stream_storage: Some(StreamStorage::Memory),
            }
        );
        assert_eq!(Topology::new().or(Topology::new()), Topology::default());
    }

    #[test]
    fn replicas_are_one_to_five() {
        for replicas in 1..=5 {
            Topology::new().stream_replicas(replicas).check().unwrap();
        }
        Topology::new().check().unwrap();
        for replicas in [0, 6, 100] {
            let error = Topology::new().stream_replicas(replicas).check().unwrap_err();
            assert_eq!(error.kind(), BrokerErrorKind::Config);
            assert_eq!(
                error.to_string(),
                format!("stream replicas must be 1 to 5, not {replicas}")
            );
        }
    }
}
