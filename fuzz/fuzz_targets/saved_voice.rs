//! The saved-voice reader (`voice.safetensors`) on whole files. Any error is fine; a panic, a hang or
//! an allocation out of proportion to the input is a bug. A voice that loads is valid and writes back
//! to bytes that read back to the same voice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_engine::voice::Conditionals;

fuzz_target!(|data: &[u8]| {
    if let Ok((v, meta)) = Conditionals::from_safetensors(data) {
        assert!(v.validate().is_ok());
        let bytes = v.to_safetensors(&meta).expect("a loaded voice saves");
        let (back, _) = Conditionals::from_safetensors(&bytes).expect("a saved voice loads");
        assert_eq!(back, v);
    }
});
