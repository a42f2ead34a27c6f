//! Taking messages without a consumer (`basic.get`), for inspecting and
//! replaying dead letters. One channel per connection serves every fetch; its
//! acks are coalesced like a consumer's.

use super::acker::AmqpAcker;
use super::convert;
use super::link::Link;
use super::topology::connection_error;
use crate::error::BrokerError;
use crate::transport::Delivery;
use lapin::options::BasicGetOptions;
use std::sync::Arc;

pub(crate) async fn fetch(link: &Arc<Link>, queue: &str, max: usize) -> Result<Vec<Delivery>, BrokerError> {
    let conn = link.conn().await?;
    let book = conn.fetch_book().await?;
    link.track(&book);
    let queue_name: Arc<str> = queue.into();
    let mut deliveries = Vec::new();
    while deliveries.len() < max {
        let got = book
            .channel()
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .map_err(connection_error)?;
        let Some(got) = got else { break };
        let delivery = got.delivery;
        book.delivered(delivery.delivery_tag);
        let message = Arc::new(convert::to_message(&delivery.properties, delivery.data));
        // Inspection: a count is shown, never acted on.
        let (count, _) = convert::delivery_count(&message, &delivery.properties, delivery.redelivered);
        let acker = AmqpAcker {
            book: book.clone(),
            tag: delivery.delivery_tag,
            generation: conn.generation,
            link: link.clone(),
            queue: queue_name.clone(),
            properties: delivery.properties,
            message,
            count,
            settled: false,
            return_by_copy: false,
        };
        deliveries.push(acker.delivery());
    }
    Ok(deliveries)
}
