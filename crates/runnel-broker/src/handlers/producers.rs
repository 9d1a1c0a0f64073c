//! InitProducerId (22): producer ids come from the core's registry
//! (`runnel_core::producers`), which never reuses one, even across restarts.
//!
//! KIP-360 (v3+): a producer may name its id and epoch to get the next epoch. Only the
//! holder of the id's current epoch gets it: an older or made-up epoch is fenced
//! (INVALID_PRODUCER_EPOCH, which Kafka answers before v4; the handler does not see the
//! version, and clients treat both as fatal), an id never handed out is
//! UNKNOWN_PRODUCER_ID, and an id the registry no longer remembers (handed out before a
//! restart) gets a new id at epoch 0, which is what Kafka answers every InitProducerId
//! without a transactional id.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use runnel_core::producer_state::BumpVerdict;
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
        // -1 for both (and v0-v2, which have neither) asks for a new id; Kafka refuses
        // one without the other.
        let verdict = match (req.producer_id.0, req.producer_epoch) {
            (-1, -1) => BumpVerdict::NewId,
            (-1, _) | (_, -1) => {
                resp.error_code = ResponseError::InvalidRequest.code();
                return resp;
            }
            (id, epoch) => self.core.producers().bump(id, epoch),
        };
        let (id, epoch) = match verdict {
            BumpVerdict::Bumped(epoch) => (req.producer_id.0, epoch),
            BumpVerdict::Fenced => {
                resp.error_code = ResponseError::InvalidProducerEpoch.code();
                return resp;
            }
            BumpVerdict::Unknown => {
                resp.error_code = ResponseError::UnknownProducerId.code();
                return resp;
            }
            BumpVerdict::NewId => match self.core.producers().allocate() {
                Ok(id) => (id, 0),
                Err(e) => {
                    warn!(error = %e, "could not persist producer ids");
                    resp.error_code = ResponseError::KafkaStorageError.code();
                    return resp;
                }
            },
        };
        resp.producer_id = ProducerId(id);
        resp.producer_epoch = epoch;
        resp
    }
}
