//! The self-check (the README's first command) passes on every backend this build has, for fresh
//! seeds, and reports every op it claims to check.
use tts_kernels::{Device, EmuOptions};

fn check(dev: &Device) {
    for _ in 0..3 {
        let (seed, checks) = tts_engine::selfcheck::run(dev, None).unwrap();
        let ops: Vec<&str> = checks.iter().map(|c| c.op).collect();
        assert_eq!(ops, ["add_rmsnorm", "embed_pos", "linear", "rmsnorm_linear", "conv+mish", "attention_relpos"]);
        for c in &checks {
            assert!(c.ok && c.max_abs.is_finite(), "{} on {} (seed {seed}): {c:?}", c.op, dev.describe());
        }
    }
}

#[test]
fn self_check_passes_on_cpu_and_emu() {
    check(&Device::cpu());
    match Device::emu(EmuOptions::default()) {
        Ok(d) => check(&d),
        Err(e) => eprintln!("emu: skipped ({e})"),
    }
}
