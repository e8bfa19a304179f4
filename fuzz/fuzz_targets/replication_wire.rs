//! The replication frames' bodies (`fjord_broker::replication::wire`):
//! what a leader decodes from followers (fetch and epoch requests) and a
//! follower decodes from leaders (their responses).
//!
//! Input layout:
//!
//! ```text
//! 0     kind  (mod 4): fetch request, fetch response, epochs request,
//!             epochs response
//! rest  the body; for a fetch response: a u16 (little-endian), the
//!       body's length, then the body, then the payload
//! ```
//!
//! Checks: never panics; a body that decodes encodes to a body that
//! decodes to the same value; a fetch response's batches are slices of
//! the payload it was decoded from (no copy), and encode to themselves as
//! the payload's chunks.
#![no_main]

use bytes::Bytes;
use fjord_broker::replication::wire::{
    EpochsRequest, EpochsResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            if let Ok(request) = ReplicaFetchRequest::decode(body) {
                let again = ReplicaFetchRequest::decode(&request.encode());
                assert_eq!(again.as_ref(), Ok(&request), "fetch request round trip");
            }
        }
        1 => {
            let Some((len, rest)) = body.split_first_chunk::<2>() else {
                return;
            };
            let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
            let (body, payload) = rest.split_at(len);
            let payload = Bytes::copy_from_slice(payload);
            if let Ok(response) = ReplicaFetchResponse::decode(body, &payload) {
                let range = payload.as_ptr_range();
                for (_, parts) in &response.topics {
                    for part in parts {
                        for batch in &part.batches {
                            if !batch.is_empty() {
                                assert!(range.contains(&batch.as_ptr()), "a batch was copied");
                            }
                        }
                    }
                }
                let (body, chunks) = response.encode();
                let again = ReplicaFetchResponse::decode(&body, &Bytes::from(chunks.concat()));
                assert_eq!(again.as_ref(), Ok(&response), "fetch response round trip");
            }
        }
        2 => {
            if let Ok(request) = EpochsRequest::decode(body) {
                let again = EpochsRequest::decode(&request.encode());
                assert_eq!(again.as_ref(), Ok(&request), "epochs request round trip");
            }
        }
        _ => {
            if let Ok(response) = EpochsResponse::decode(body) {
                let again = EpochsResponse::decode(&response.encode());
                assert_eq!(again.as_ref(), Ok(&response), "epochs response round trip");
            }
        }
    }
});
