use std::path::Path;
use tts_kernels::checkpoint::Checkpoint;
use tts_voice::voice_encoder::{VoiceEncoder, VoiceEncoderConfig, aggregate, trim};
#[test]
fn bench() {
    let dir = Path::new("/tmp/vefx/voice_encoder_full");
    let ve = VoiceEncoder::load(&dir.join("ve.safetensors"), &VoiceEncoderConfig::default()).unwrap();
    let wav = Checkpoint::open(&dir.join("inputs.safetensors")).unwrap().f32("wav_16k", &[1, 160000]).unwrap();
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let r = trim(&wav, 20.0, "a").unwrap();
        let t1 = t.elapsed();
        let mel = ve.mel(&wav[r]).unwrap();
        let t2 = t.elapsed();
        let w = ve.partials(mel.len() / 40).unwrap();
        let p = ve.partial_embeds(&mel, mel.len() / 40, &w).unwrap();
        let t3 = t.elapsed();
        let _ = aggregate(&p, w.count, 256).unwrap();
        println!("trim {t1:?} mel {t2:?} lstm {t3:?}");
    }
}
