//! advance_decode_state on every kernel backend against the Cpu op: live requests move on and take their
//! sampled token, done requests become inactive (lens 0) and keep everything else.
use tts_kernels::testing::{fresh_seed, kernel_devices, random_i32};
use tts_kernels::{Device, Tensor, ops};

#[test]
fn advance_matches_cpu() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    for n in [1usize, 3, 130] {
        let next = random_i32(seed, n, 0, 8194);
        let mut state = vec![0i32; n * 4];
        for (q, d) in random_i32(seed + 1, n, 0, 3).into_iter().enumerate() {
            state[q * 4 + 1] = (d == 0) as i32; // about a third done
            state[q * 4] = 5;
        }
        let tokens = random_i32(seed + 2, 2 * n, 0, 8194);
        let positions = random_i32(seed + 3, 2 * n, 40, 900);
        let speech_pos = random_i32(seed + 4, 2 * n, 0, 500);
        let lens: Vec<i32> = positions.iter().map(|p| p + 1).collect();
        let run = |d: &Device| {
            let nt = Tensor::from_i32(d, &[n], &next).unwrap();
            let st = Tensor::from_i32(d, &[n, 4], &state).unwrap();
            let mut t = Tensor::from_i32(d, &[2 * n], &tokens).unwrap();
            let mut p = Tensor::from_i32(d, &[2 * n], &positions).unwrap();
            let mut s = Tensor::from_i32(d, &[2 * n], &speech_pos).unwrap();
            let mut l = Tensor::from_i32(d, &[2 * n], &lens).unwrap();
            ops::advance_decode_state(nt.view(), st.view(), t.view_mut(), p.view_mut(), s.view_mut(), l.view_mut()).unwrap();
            [t, p, s, l].map(|x| x.to_i32_vec().unwrap())
        };
        let want = run(&Device::cpu());
        for q in 0..n {
            let done = state[q * 4 + 1] != 0;
            for r in [2 * q, 2 * q + 1] {
                if done {
                    assert_eq!((want[0][r], want[1][r], want[2][r], want[3][r]), (tokens[r], positions[r], speech_pos[r], 0));
                } else {
                    assert_eq!(
                        (want[0][r], want[1][r], want[2][r], want[3][r]),
                        (next[q], positions[r] + 1, speech_pos[r] + 1, positions[r] + 2)
                    );
                }
            }
        }
        for (label, dev) in kernel_devices() {
            assert_eq!(run(&dev), want, "{label}: n {n}");
        }
    }
}
