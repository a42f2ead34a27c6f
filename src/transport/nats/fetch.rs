//! Taking what waits in a queue without a route's consumer: dead-letter
//! inspection and replay. Messages given back return in place (a nak).

use super::Shared;
use super::acker::{Mode, Source};
use super::delivery::{delivered_count, delivery};
use super::naming::{self, CONSUMER};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::transport::Delivery;
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use std::sync::Arc;

/// Messages given back are redelivered before the rest and not in stream
/// order, so a fetch takes up to this many and keeps the oldest `max`.
const FETCH_WINDOW: usize = 1000;

/// Up to `max` messages waiting in `queue` now.
pub(crate) async fn fetch(
    shared: &Arc<Shared>,
    queue: &str,
    max: usize,
) -> Result<Vec<Delivery>, BrokerError> {
    naming::check_queue(queue)?;
    if max == 0 {
        return Ok(Vec::new());
    }
    let Ok(stream) = shared.jetstream.get_stream(naming::stream(queue)).await else {
        return Ok(Vec::new());
    };
    let Ok(consumer) = stream.get_consumer::<_>(CONSUMER).await else {
        return Ok(Vec::new());
    };
    let consumer: PullConsumer = consumer;
    let failed = |e: &dyn std::fmt::Display| {
        BrokerError::new(
            BrokerErrorKind::Consume,
            format!("fetching from {queue} failed: {e}"),
        )
    };
    let mut batch = consumer
        .fetch()
        .max_messages(max.max(FETCH_WINDOW))
        .messages()
        .await
        .map_err(|e| failed(&e))?;
    let source = Arc::new(Source {
        shared: shared.clone(),
        queue: queue.into(),
        mode: Mode::Fetch,
        window: None,
        closed: None,
        keep: None,
    });
    let mut out = Vec::new();
    while let Some(next) = batch.next().await {
        let message = next.map_err(|e| failed(&e))?;
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX);
        let delivered = message.reply.as_deref().and_then(delivered_count);
        out.push((sequence, delivery(&source, message.message, delivered, None)));
    }
    // Messages given back earlier come first, newest first: stream order
    // is the order they were stored in.
    // The rest go back in place (dropped unsettled: a nak).
    out.sort_by_key(|(sequence, _)| *sequence);
    out.truncate(max);
    Ok(out.into_iter().map(|(_, delivery)| delivery).collect())
}
