//! `decode_request` on a CreateTopics frame with arbitrary body and payload bytes,
//! then every accessor of the verified request (see `fjord_fuzz`).
#![no_main]

use fjord_schema::api::ApiKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_fuzz::fuzz_request(ApiKey::CreateTopics, data);
});
