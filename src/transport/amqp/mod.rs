//! The RabbitMQ transport (AMQP 0-9-1, over `lapin`), behind the `amqp`
//! feature. Topology and naming: [`topology`]; the AMQP mapping of wharf's
//! message model: `docs/wire-format.md`.

mod acker;
mod acks;
mod consumer;
mod convert;
mod endpoints;
mod exchanges;
mod fetch;
mod link;
mod reply;
pub mod topology;

use crate::error::BrokerError;
use crate::transport::broker_options::BrokerOptions;
use crate::transport::{BoxFuture, Delivery, DeliveryStream, QueueSpec, ReplyInbox, Transport};
use crate::wire::message::Message;
use endpoints::Endpoints;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use link::Link;
use std::sync::Arc;
use tokio::sync::watch;
use topology::connection_error;

/// A RabbitMQ connection, supervised and reconnected.
pub(crate) struct AmqpTransport {
    link: Arc<Link>,
}

impl AmqpTransport {
    /// Connects as `options` say (`amqp://` or `amqps://`, one server or
    /// several). `?queue_type=quorum` declares quorum work queues.
    pub(crate) async fn connect(options: &BrokerOptions) -> Result<Self, BrokerError> {
        let link = Link::connect(Endpoints::new(options)?).await?;
        Ok(AmqpTransport { link })
    }
}

impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn declare(&self, spec: &QueueSpec) -> BoxFuture<'_, Result<(), BrokerError>> {
        let spec = spec.clone();
        Box::pin(async move { self.link.declare(&spec).await })
    }

    fn consume(
        &self,
        spec: &QueueSpec,
        prefetch: usize,
    ) -> BoxFuture<'_, Result<DeliveryStream, BrokerError>> {
        let stream = consumer::consume(self.link.clone(), spec.clone(), prefetch);
        Box::pin(std::future::ready(Ok(stream)))
    }

    fn publish(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let conn = self.link.conn().await?;
            let properties = convert::properties(&message);
            conn.publish(&queue, &message.body, properties, true).await
        })
    }

    fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> BoxFuture<'_, Result<(), BrokerError>> {
        let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
        Box::pin(async move {
            let conn = self.link.conn().await?;
            let properties = convert::properties(&message);
            conn.publish_to_exchange(&exchange, &routing_key, &message.body, properties)
                .await
        })
    }

    /// Replies go to any reply address (a named queue or a direct reply-to
    /// address); a requester that has gone is not an error.
    fn reply(&self, address: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let address = address.to_owned();
        Box::pin(async move {
            let conn = self.link.conn().await?;
            let properties = convert::properties(&message);
            conn.publish(&address, &message.body, properties, false).await
        })
    }

    /// A queue name or a direct reply-to address: not empty (the default
    /// exchange routes an empty routing key nowhere) and at most 255 bytes
    /// (the longest queue name).
    fn check_reply_address(&self, address: &str) -> Result<(), String> {
        if address.is_empty() {
            return Err("it is empty: RabbitMQ's default exchange routes it to no queue".to_owned());
        }
        if address.len() > 255 {
            return Err(format!(
                "it is {} bytes long; a queue name has at most 255",
                address.len()
            ));
        }
        Ok(())
    }

    fn reply_inbox(&self) -> BoxFuture<'_, Result<ReplyInbox, BrokerError>> {
        Box::pin(reply::open(&self.link))
    }

    fn fetch(&self, queue: &str, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move { fetch::fetch(&self.link, &queue, max).await })
    }

    fn depth(&self, queue: &str) -> BoxFuture<'_, Result<u64, BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let conn = self.link.conn().await?;
            // A passive declare of a missing queue closes its channel.
            let channel = conn.connection.create_channel().await.map_err(connection_error)?;
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let depth = match channel
                .queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await
            {
                Ok(declared) => u64::from(declared.message_count()),
                Err(_) => 0,
            };
            let _ = channel.close(200, "wharf: done".into()).await;
            Ok(depth)
        })
    }

    fn delete(&self, queue: &str) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let conn = self.link.conn().await?;
            self.link.forget(&queue);
            topology::delete_all(&conn.connection, &queue).await
        })
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.link.connected()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.link.flush())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.link.close())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::BrokerErrorKind;
    use endpoints::split_url;
    use topology::QueueType;

    #[test]
    fn wharf_parameters_leave_the_url() {
        let (url, kind) = split_url("amqp://u:p@h/%2f?heartbeat=5&queue_type=quorum").unwrap();
        assert_eq!(
            (url.as_str(), kind),
            ("amqp://u:p@h/%2f?heartbeat=5", QueueType::Quorum)
        );
        let (url, kind) = split_url("amqp://h").unwrap();
        assert_eq!((url.as_str(), kind), ("amqp://h", QueueType::Classic));
        assert!(split_url("amqp://h?queue_type=stream").is_err());
    }

    #[tokio::test]
    async fn a_url_lapin_cannot_parse_is_not_quoted_in_the_error() {
        // lapin's error for it is "Invalid URL: '<the URL>'".
        let Err(error) = AmqpTransport::connect(&BrokerOptions::new("amqp:guest:s3cr3t@h")).await else {
            panic!("not a URL lapin takes");
        };
        assert_eq!(error.kind(), BrokerErrorKind::Config);
        let shown = format!("{} {error:?}", crate::error::Chain(&error));
        assert!(shown.contains("Invalid URL"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
