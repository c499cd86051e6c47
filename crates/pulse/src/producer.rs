//! Sending with back-pressure and waiting for acknowledgements, shared by ingest and fold.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::PipelineError;

/// Records handed to the producer whose acknowledgement is still to be awaited.
#[derive(Default)]
pub struct Outstanding(Vec<DeliveryFuture>);

impl Outstanding {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Enqueues `record`, waiting while librdkafka's local queue is full.
    pub async fn send<K, P>(
        &mut self,
        producer: &FutureProducer,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<(), PipelineError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    self.0.push(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits for every acknowledgement; the first failure is returned.
    pub async fn wait(self) -> Result<(), PipelineError> {
        for f in self.0 {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(PipelineError::ProducerGone),
            }
        }
        Ok(())
    }
}

/// Flushes a producer's queue on shutdown.
pub fn flush(producer: &FutureProducer) {
    use rdkafka::producer::Producer;
    let _ = producer.flush(Timeout::After(Duration::from_secs(10)));
}
