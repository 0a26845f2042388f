//! Captured graphs: replay equals eager execution (bit for bit on Emu), the launch count is what was
//! issued, and work that cannot be replayed (allocations, host copies) is refused during a capture.
use tts_kernels::testing::{fresh_seed, kernel_devices, random_f32, random_i32};
use tts_kernels::{BackendKind, DType, Device, Tensor, ops};

/// A small "step": embedding into a residual stream, then norm + GEMM + residual add, twice.
struct Step {
    ids: Tensor,
    pos: Tensor,
    table: Tensor,
    pos_table: Tensor,
    w_norm: Tensor,
    w: Tensor,
    h: Tensor,
    a: Tensor,
    y: Tensor,
}

impl Step {
    fn new(dev: &Device, seed: u64) -> Step {
        let act = dev.compute_dtype();
        let (rows, d, vocab) = (6, 96, 50);
        Step {
            ids: Tensor::from_i32(dev, &[rows], &random_i32(seed, rows, 0, vocab as i32)).unwrap(),
            pos: Tensor::from_i32(dev, &[rows], &random_i32(seed + 1, rows, 0, 10)).unwrap(),
            table: Tensor::from_f32(dev, act, &[vocab, d], &random_f32(seed + 2, vocab * d, 1.0)).unwrap(),
            pos_table: Tensor::from_f32(dev, act, &[10, d], &random_f32(seed + 3, 10 * d, 1.0)).unwrap(),
            w_norm: Tensor::from_f32(dev, act, &[d], &random_f32(seed + 4, d, 1.0)).unwrap(),
            w: Tensor::from_f32(dev, act, &[d, d], &random_f32(seed + 5, d * d, 0.1)).unwrap(),
            h: Tensor::zeros(dev, DType::F32, &[rows, d]).unwrap(),
            a: Tensor::zeros(dev, act, &[rows, d]).unwrap(),
            y: Tensor::zeros(dev, act, &[rows, d]).unwrap(),
        }
    }

    fn run(&mut self) -> tts_kernels::Result<()> {
        ops::embed_pos(self.ids.view(), Some((self.pos.view(), self.pos_table.view())), self.table.view(), self.h.view_mut())?;
        for _ in 0..2 {
            ops::add_rmsnorm(None, self.h.view_mut(), self.w_norm.view(), self.a.view_mut(), 1e-5)?;
            ops::linear(self.a.view(), self.w.view(), None, self.y.view_mut())?;
            ops::add_residual(self.h.view_mut(), self.y.view(), None)?;
        }
        Ok(())
    }
}

#[test]
fn replay_equals_eager() {
    let seed = fresh_seed();
    for (label, dev) in kernel_devices() {
        let mut eager = Step::new(&dev, seed);
        eager.run().unwrap();
        let want = eager.h.to_f32_vec().unwrap();

        let mut s = Step::new(&dev, seed);
        let graph = dev.capture(|| s.run()).unwrap();
        assert_eq!(
            graph.kernel_names(),
            ["embed_pos_bf16", "add_rmsnorm_bf16", "gemm", "add_residual_bf16", "add_rmsnorm_bf16", "gemm", "add_residual_bf16"],
            "{label}"
        );
        assert_eq!(graph.launch_count(), 7);
        if dev.kind() == BackendKind::Emu {
            // nothing ran during the capture: the residual stream is still zero
            assert!(s.h.to_f32_vec().unwrap().iter().all(|&v| v == 0.0), "{label}: capture executed work");
        }
        graph.replay().unwrap();
        dev.synchronize().unwrap();
        let got = s.h.to_f32_vec().unwrap();
        if dev.kind() == BackendKind::Emu {
            assert_eq!(got, want, "{label}: replay differs from eager");
        } else {
            tts_kernels::testing::assert_close(&label, &got, &want, 1e-6, 1e-6);
        }
        // a second replay re-embeds (resetting h) and repeats the same work: the same result
        graph.replay().unwrap();
        assert_eq!(s.h.to_f32_vec().unwrap(), got, "{label}: replays differ");
        // new per-step values in the same buffers are picked up by the replay
        s.ids.copy_from_i32(&[1, 2, 3, 4, 5, 6]).unwrap();
        graph.replay().unwrap();
        assert_ne!(s.h.to_f32_vec().unwrap(), got, "{label}: the replay ignored new device inputs");
    }
}

#[test]
fn allocations_and_host_copies_are_refused_while_capturing() {
    for (label, dev) in kernel_devices() {
        let mut t = Tensor::zeros(&dev, DType::F32, &[4]).unwrap();
        let e = dev
            .capture::<tts_kernels::Error>(|| Tensor::zeros(&dev, DType::F32, &[4]).map(|_| ()))
            .err()
            .expect("allocation accepted");
        assert!(e.to_string().contains("not allowed while capturing"), "{label}: {e}");
        let e = dev.capture::<tts_kernels::Error>(|| t.copy_from_f32(&[1.0; 4])).err().expect("host copy accepted");
        assert!(e.to_string().contains("not allowed while capturing"), "{label}: {e}");
        assert!(!dev.is_capturing(), "{label}: a failed capture must end the capture");
        t.copy_from_f32(&[1.0; 4]).unwrap();
    }
    let e = Device::cpu().capture::<tts_kernels::Error>(|| Ok(())).err().expect("cpu capture");
    assert!(e.to_string().contains("eagerly"), "{e}");
}
