//! Sending with back-pressure and waiting for acknowledgements, shared by ingest and fold.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::PipelineError;

/// Records handed to the producer whose acknowledgement is still to be awaited, each with a
/// tag `T` its sender may want back when it is refused as too large.
pub struct Outstanding<T = ()>(Vec<(Pending, T)>);

enum Pending {
    Delivery(DeliveryFuture),
    /// Refused by the client before it was queued.
    Refused(KafkaError),
}

impl<T> Default for Outstanding<T> {
    fn default() -> Self {
        Outstanding(Vec::new())
    }
}

/// The client or the broker refused a record as larger than it takes (`message.max.bytes`,
/// a topic's `max.message.bytes`): that record will never be sent as it is.
pub fn too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

impl Outstanding<()> {
    /// Enqueues `record`, waiting while librdkafka's local queue is full.
    pub async fn send<K, P>(
        &mut self,
        producer: &FutureProducer,
        record: FutureRecord<'_, K, P>,
    ) -> Result<(), PipelineError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        self.send_tagged(producer, record, ()).await
    }
}

impl<T> Outstanding<T> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Enqueues `record` with `tag`, waiting while librdkafka's local queue is full. A record
    /// the client refuses as too large is kept as refused, for [`Self::wait_too_large`].
    pub async fn send_tagged<K, P>(
        &mut self,
        producer: &FutureProducer,
        mut record: FutureRecord<'_, K, P>,
        tag: T,
    ) -> Result<(), PipelineError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    self.0.push((Pending::Delivery(f), tag));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) if too_large(&e) => {
                    self.0.push((Pending::Refused(e), tag));
                    return Ok(());
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits for every acknowledgement; the first failure is returned.
    pub async fn wait(self) -> Result<(), PipelineError> {
        let refused = self.wait_too_large().await?;
        match refused.into_iter().next() {
            Some((e, _)) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Waits for every acknowledgement; returns the records refused as too large, with their
    /// tags, and the first other failure as an error.
    pub async fn wait_too_large(self) -> Result<Vec<(KafkaError, T)>, PipelineError> {
        let mut refused = Vec::new();
        for (pending, tag) in self.0 {
            let result = match pending {
                Pending::Delivery(f) => match f.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => return Err(PipelineError::ProducerGone),
                },
                Pending::Refused(e) => Err(e),
            };
            match result {
                Ok(()) => {}
                Err(e) if too_large(&e) => refused.push((e, tag)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(refused)
    }
}

/// Flushes a producer's queue on shutdown.
pub fn flush(producer: &FutureProducer) {
    use rdkafka::producer::Producer;
    let _ = producer.flush(Timeout::After(Duration::from_secs(10)));
}
