//! Request/reply on RabbitMQ: a client receives replies through direct
//! reply-to (`amq.rabbitmq.reply-to`): no reply queue to declare or clean
//! up, any number of requests in flight on one consumer. RabbitMQ answers
//! only requests published on the channel that consumes the replies, so
//! the inbox publishes its requests itself.

use super::convert;
use super::link::{Link, confirm_channel, publish_on};
use super::topology::connection_error;
use crate::error::BrokerError;
use crate::transport::{BoxFuture, ReplyInbox, RequestSender};
use crate::wire::message::Message;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use std::sync::Arc;

/// RabbitMQ's pseudo-queue for direct reply-to.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

pub(crate) async fn open(link: &Arc<Link>) -> Result<ReplyInbox, BrokerError> {
    let conn = link.conn().await?;
    let channel = confirm_channel(&conn.connection).await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(DIRECT_REPLY_TO.into(), "".into(), options, FieldTable::default())
        .await
        .map_err(connection_error)?;
    // The inbox ends with its connection: a reconnect gives the client a new one.
    let mut connections = link.connections();
    let generation = conn.generation;
    let ended = async move {
        let _ = connections
            .wait_for(|s| s.as_ref().is_none_or(|s| s.generation != generation))
            .await;
    };
    let replies = consumer
        .take_until(ended)
        .take_while(|delivery| std::future::ready(delivery.is_ok()))
        .filter_map(|delivery| async move {
            let delivery = delivery.ok()?;
            Some(convert::to_message(&delivery.properties, delivery.data))
        });
    Ok(ReplyInbox {
        address: DIRECT_REPLY_TO.to_owned(),
        replies: Box::pin(replies),
        requests: Box::new(Requests { channel }),
    })
}

struct Requests {
    channel: Channel,
}

impl RequestSender for Requests {
    fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    fn send(&self, queue: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            // Transient: a direct reply-to requester does not outlive a
            // broker restart, so a persistent request would only make
            // RabbitMQ write it to disk before confirming (~1.5x latency).
            let properties = convert::properties(&message).with_delivery_mode(1);
            publish_on(&self.channel, &queue, &message.body, properties, true).await
        })
    }
}
