//! The checkpoint reader (`tts_kernels::Checkpoint`) on arbitrary bytes: the safetensors header
//! parse at open, then every tensor it lists read back through each accessor (its shape, `f32` with
//! that shape and with a wrong one, uploads in f32 and bf16 to the Cpu device). A checkpoint only
//! opens by path (it memory-maps the file), so each input is written to a scratch file first.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::{DType, Device};

/// One scratch file per fuzzing process, rewritten for every input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        dir.join(format!("tts-fuzz-checkpoint-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("writing the scratch file");
    let Ok(ck) = Checkpoint::open(path) else { return };
    let dev = Device::cpu();
    for name in ck.names() {
        let shape = ck.shape(name).expect("a listed name has a shape").to_vec();
        assert!(ck.contains(name));
        if let Ok(v) = ck.f32(name, &shape) {
            assert_eq!(v.len(), shape.iter().product::<usize>(), "{name}: {shape:?}");
            for dtype in [DType::F32, DType::BF16] {
                let _ = ck.upload(&dev, dtype, name, &shape);
            }
        }
        let mut wrong = shape.clone();
        wrong.push(1);
        assert!(ck.f32(name, &wrong).is_err(), "{name}: read with a wrong shape");
    }
    assert!(ck.f32("\u{0}not a tensor", &[1]).is_err());
});
