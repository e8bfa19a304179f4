//! `decode_response` for every api key (chosen by the first input byte), with
//! and without the ERROR flag, then every accessor of the verified response
//! (see `fjord_fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_fuzz::fuzz_response(data);
});
