//! The pickle VM of the voice reader (`tts_engine::voice::pickle::unpickle`) on arbitrary bytes:
//! the `data.pkl` of a `conds.pt` without the zip around it, so that the fuzzer reaches every opcode
//! directly. Any error is fine; a panic, a hang, a leak or an allocation out of proportion to the
//! input is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_engine::voice::pickle::{Value, unpickle};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = unpickle(data) {
        // What the voice reader does with the result: look keys up in a dict.
        if let Value::Dict(d) = &v {
            let found = d.borrow().iter().any(|(k, _)| matches!(k, Value::Str(s) if s == "t3"));
            std::hint::black_box(found);
        }
        std::hint::black_box(v.kind());
    }
});
