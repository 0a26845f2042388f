//! CAMPPlus with synthetic random weights ([`Checkpoint::synthetic`]): every `speaker_encoder.*`
//! tensor [`CampPlus::load`] reads, with its official name and shape under a config. Convolutions
//! keep unit-variance activations (He: std `√2/√fan_in` before a ReLU), BatchNorm gains ≈ 1, shifts and
//! running means ≈ 0, running variances ≈ 1, so the embedding is of order 1 (tests, speed runs).
use tts_kernels::Device;
use tts_kernels::checkpoint::Checkpoint;
use tts_kernels::checkpoint::synthetic::{Init, SynthTensor};

use super::head::{CHANNELS, OUT_CHANNELS};
use super::xvector::BLOCKS;
use super::{CampPlus, CampPlusConfig, WEIGHT_PREFIX};
use crate::Result;

struct Manifest(Vec<SynthTensor>);

impl Manifest {
    fn t(&mut self, name: String, shape: &[usize], init: Init) {
        self.0.push(SynthTensor::new(name, shape, init));
    }

    fn conv(&mut self, name: String, shape: &[usize]) {
        let fan_in = shape[1..].iter().product();
        self.t(name, shape, Init::fan_in(fan_in, std::f32::consts::SQRT_2));
    }

    fn bn(&mut self, p: &str, c: usize, affine: bool) {
        if affine {
            self.t(format!("{p}.weight"), &[c], Init::around(1.0, 0.1));
            self.t(format!("{p}.bias"), &[c], Init::spread(0.1));
        }
        self.t(format!("{p}.running_mean"), &[c], Init::spread(0.1));
        self.t(format!("{p}.running_var"), &[c], Init::around(1.0, 0.1));
    }
}

/// Every tensor [`CampPlus::load`] reads under `cfg`.
pub fn manifest(cfg: &CampPlusConfig) -> Vec<SynthTensor> {
    let mut m = Manifest(Vec::new());
    let c = CHANNELS;
    let h = format!("{WEIGHT_PREFIX}.head");
    m.conv(format!("{h}.conv1.weight"), &[c, 1, 3, 3]);
    m.bn(&format!("{h}.bn1"), c, true);
    for layer in 1..=2 {
        for i in 0..2 {
            let p = format!("{h}.layer{layer}.{i}");
            m.conv(format!("{p}.conv1.weight"), &[c, c, 3, 3]);
            m.bn(&format!("{p}.bn1"), c, true);
            m.conv(format!("{p}.conv2.weight"), &[c, c, 3, 3]);
            m.bn(&format!("{p}.bn2"), c, true);
            if i == 0 {
                m.conv(format!("{p}.shortcut.0.weight"), &[c, c, 1, 1]);
                m.bn(&format!("{p}.shortcut.1"), c, true);
            }
        }
    }
    m.conv(format!("{h}.conv2.weight"), &[c, c, 3, 3]);
    m.bn(&format!("{h}.bn2"), c, true);

    let x = format!("{WEIGHT_PREFIX}.xvector");
    let (g, init) = (cfg.campplus_growth_rate, cfg.campplus_init_channels);
    let bn = cfg.campplus_bn_size * g;
    m.conv(format!("{x}.tdnn.linear.weight"), &[init, OUT_CHANNELS, 5]);
    m.bn(&format!("{x}.tdnn.nonlinear.batchnorm"), init, true);
    let mut ch = init;
    for (b, &(n, _)) in BLOCKS.iter().enumerate() {
        for i in 0..n {
            let p = format!("{x}.block{}.tdnnd{}", b + 1, i + 1);
            let c_in = ch + i * g;
            m.bn(&format!("{p}.nonlinear1.batchnorm"), c_in, true);
            m.conv(format!("{p}.linear1.weight"), &[bn, c_in, 1]);
            m.bn(&format!("{p}.nonlinear2.batchnorm"), bn, true);
            m.conv(format!("{p}.cam_layer.linear_local.weight"), &[g, bn, 3]);
            m.conv(format!("{p}.cam_layer.linear1.weight"), &[bn / 2, bn, 1]);
            m.t(format!("{p}.cam_layer.linear1.bias"), &[bn / 2], Init::spread(0.1));
            m.conv(format!("{p}.cam_layer.linear2.weight"), &[g, bn / 2, 1]);
            m.t(format!("{p}.cam_layer.linear2.bias"), &[g], Init::spread(0.1));
        }
        ch += n * g;
        m.bn(&format!("{x}.transit{}.nonlinear.batchnorm", b + 1), ch, true);
        m.conv(format!("{x}.transit{}.linear.weight", b + 1), &[ch / 2, ch, 1]);
        ch /= 2;
    }
    m.bn(&format!("{x}.out_nonlinear.batchnorm"), ch, true);
    m.conv(format!("{x}.dense.linear.weight"), &[cfg.embedding_size, 2 * ch, 1]);
    m.bn(&format!("{x}.dense.nonlinear.batchnorm"), cfg.embedding_size, false);
    m.0
}

/// The synthetic checkpoint of `cfg` under `seed`.
pub fn checkpoint(cfg: &CampPlusConfig, seed: u64) -> Result<Checkpoint> {
    cfg.validate()?;
    Ok(Checkpoint::synthetic(&format!("synthetic CAMPPlus (random weights, seed {seed})"), seed, manifest(cfg))?)
}

impl CampPlus {
    /// A CAMPPlus of sizes `cfg` with synthetic random weights.
    pub fn synthetic(cfg: &CampPlusConfig, seed: u64) -> Result<CampPlus> {
        CampPlus::synthetic_on(cfg, seed, &Device::cpu())
    }

    /// [`Self::synthetic`] with the network on `dev` (as [`CampPlus::load_on`]).
    pub fn synthetic_on(cfg: &CampPlusConfig, seed: u64, dev: &Device) -> Result<CampPlus> {
        cfg.validate()?;
        CampPlus::load_on(&checkpoint(cfg, seed)?, cfg, dev)
    }
}
