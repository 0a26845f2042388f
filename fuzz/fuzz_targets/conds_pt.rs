//! The built-in voice reader on whole files: a `conds.pt` (zip container + torch pickle +
//! storages) from arbitrary bytes. Any error is fine; a panic, a hang or an allocation out of
//! proportion to the input is a bug. A voice that loads must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tts_engine::voice::{Conditionals, MEL_BINS};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Conditionals::parse(data.to_vec()) {
        assert!(v.s3gen.prompt_token_len <= v.s3gen.prompt_token.len());
        assert_eq!(v.s3gen.prompt_feat.len(), v.s3gen.prompt_feat_frames * MEL_BINS);
    }
});
