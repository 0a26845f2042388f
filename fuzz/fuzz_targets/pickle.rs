//! The pickle VM of the voice reader (`tts_engine::voice::pickle::unpickle`) on arbitrary bytes:
//! the `data.pkl` of a `conds.pt` without the zip around it, so that the fuzzer reaches every opcode
//! directly. Any error is fine; a panic, a hang, a leak or an allocation out of proportion to the
//! input is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_engine::voice::pickle::{Pickle, Value, unpickle};

/// Reads `v` through every accessor that applies to it, as the voice reader would.
fn read(p: &Pickle, v: Value) {
    std::hint::black_box((v.kind(), p.str(v), p.items(v).map(<[Value]>::len), p.global(v), p.storage(v)));
    if let Some(t) = p.tensor(v) {
        assert!(p.storage(t.storage).is_some(), "a tensor's storage is a storage");
        assert_eq!(t.shape.len(), t.stride.len());
    }
    if let Some(pairs) = p.dict(v) {
        for &(k, _) in pairs {
            if let Some(key) = p.str(k) {
                assert!(p.get(v, key).is_some(), "a key listed in a dict is found");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = unpickle(data) {
        let root = p.root();
        read(&p, root);
        // One level down (no recursion: a pickle can build cycles).
        let children: Vec<Value> = match (p.items(root), p.dict(root)) {
            (Some(items), _) => items.to_vec(),
            (_, Some(pairs)) => pairs.iter().flat_map(|&(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        for c in children {
            read(&p, c);
        }
    }
});
