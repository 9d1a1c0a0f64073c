//! InitProducerId (22): producer ids come from the core's registry
//! (`runnel_core::producers`), which never reuses one, even across restarts.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use crate::broker::Broker;

impl Broker {
    pub(crate) fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut resp = InitProducerIdResponse::default();
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            // Transactions are not implemented (and their APIs are not advertised).
            resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
            return resp;
        }
        // KIP-360 (v3+): a known producer may ask to bump its epoch after an error.
        let bump =
            req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1;
        let (id, epoch) = if bump {
            (req.producer_id.0, req.producer_epoch + 1)
        } else {
            match self.core.producers().allocate() {
                Ok(id) => (id, 0),
                Err(e) => {
                    warn!(error = %e, "could not persist producer ids");
                    resp.error_code = ResponseError::KafkaStorageError.code();
                    return resp;
                }
            }
        };
        resp.producer_id = ProducerId(id);
        resp.producer_epoch = epoch;
        resp
    }
}
