//! The parity harness (a custom test main): every fixture case, on Cpu (f32 tolerance), on Cpu with
//! bf16 GEMM weights and KV cache (`cpu-bf16`, bf16 tolerance, on this CPU's instruction path), in
//! builds with the `emu` feature on Emu (bf16 tolerance), and on Cuda (bf16 tolerance) when a GPU is
//! usable.
//! `TTS_PARITY_BACKENDS=cuda` (a comma list) picks the backends instead; `TTS_REQUIRE_CUDA=1` makes an
//! unusable GPU a failure. `TTS_PARITY_CASES` (a comma list of name prefixes, e.g. `tts_generate,t3_`)
//! runs only the cases whose names start with one of them; `TTS_PARITY_VERBOSE=1` prints every
//! tensor's figures under a passing case too. Prints one line per case and backend, then
//! `parity: N passed, M failed, P pending`. Malformed cases and failures make it exit non-zero.
use std::path::Path;
use std::process::ExitCode;

use tts_suite::parity::{KINDS, Outcome, Tolerance, discover, load_case};

fn main() -> ExitCode {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dirs = match discover(&fixtures) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("parity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let backends = match backends() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("parity: {e}");
            return ExitCode::FAILURE;
        }
    };
    let only: Vec<String> = std::env::var("TTS_PARITY_CASES")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let dirs: Vec<_> = dirs
        .into_iter()
        .filter(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            only.is_empty() || only.iter().any(|p| name.starts_with(p.as_str()))
        })
        .collect();
    let verbose = std::env::var("TTS_PARITY_VERBOSE").is_ok_and(|v| v == "1");
    let backends: Vec<&str> = backends.iter().map(|s| s.as_str()).collect();
    let backends = backends.as_slice();
    let (mut passed, mut failed, mut pending) = (0, 0, 0);
    for dir in &dirs {
        let case = match load_case(dir) {
            Ok(c) => c,
            Err(e) => {
                println!("parity FAILED  {:<34} malformed case: {e}", dir.display());
                failed += 1;
                continue;
            }
        };
        let kind = KINDS.iter().find(|k| k.name == case.meta.kind).expect("validated by load_case");
        let Some(run) = kind.run else {
            if kind.implemented {
                println!(
                    "parity FAILED  {:<34} {} is implemented but the harness has no runner for {}",
                    case.name, kind.part, kind.name
                );
                failed += 1;
            } else {
                println!("parity pending {:<34} needs {}", case.name, kind.part);
                pending += 1;
            }
            continue;
        };
        let targets: &[&str] = if kind.host_only { &["host"] } else { backends };
        for &b in targets {
            let tol = if b == "emu" || b == "cuda" || b == "cpu-bf16" {
                Tolerance { bf16: true, ..case.meta.tolerance.bf16 }
            } else {
                case.meta.tolerance.f32
            };
            match run(&case, b, tol) {
                Ok(Outcome::Passed(r)) => {
                    let worst = r.iter().map(|t| t.max_rel).fold(0.0f64, f64::max);
                    println!("parity ok      {:<34} {b:<5} {} tensors, max rel err {worst:.2e}", case.name, r.len());
                    if verbose {
                        for t in &r {
                            println!(
                                "    {}: max abs {:.3e}, max rel {:.3e}, rel L2 {:.3e} {}",
                                t.name, t.max_abs, t.max_rel, t.rel_l2, t.detail
                            );
                        }
                    }
                    passed += 1;
                }
                Ok(Outcome::Failed(why, r)) => {
                    println!("parity FAILED  {:<34} {b:<5} {why}", case.name);
                    for t in r.iter().filter(|t| !t.ok) {
                        println!(
                            "    {}: max abs {:.3e}, max rel {:.3e}, rel L2 {:.3e}: {}",
                            t.name, t.max_abs, t.max_rel, t.rel_l2, t.detail
                        );
                    }
                    failed += 1;
                }
                Ok(Outcome::Pending(part)) => {
                    println!("parity pending {:<34} {b:<5} needs {part}", case.name);
                    pending += 1;
                }
                Err(e) => {
                    println!("parity FAILED  {:<34} {b:<5} error: {e}", case.name);
                    failed += 1;
                }
            }
        }
    }
    println!("parity: {passed} passed, {failed} failed, {pending} pending");
    if failed > 0 || passed + pending == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The backends to run: `TTS_PARITY_BACKENDS`, else Cpu, Cpu with bf16 weights and KV cache
/// (`cpu-bf16`, bf16 tolerance), Emu (when built) and Cuda (when usable).
fn backends() -> Result<Vec<String>, String> {
    let require_cuda = std::env::var("TTS_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    if let Ok(list) = std::env::var("TTS_PARITY_BACKENDS") {
        let b: Vec<String> = list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if let Some(bad) = b.iter().find(|s| !["cpu", "cpu-bf16", "emu", "cuda"].contains(&s.as_str())) {
            return Err(format!("TTS_PARITY_BACKENDS: unknown backend {bad:?} (cpu, cpu-bf16, emu, cuda)"));
        }
        if b.iter().any(|s| s == "cuda") {
            tts_suite::parity::cuda_device().map_err(|e| format!("TTS_PARITY_BACKENDS names cuda: {e}"))?;
        }
        return Ok(b);
    }
    let mut b = vec!["cpu".to_string(), "cpu-bf16".to_string()];
    if cfg!(feature = "emu") {
        b.push("emu".into());
    }
    match tts_suite::parity::cuda_device() {
        Ok(_) => b.push("cuda".into()),
        Err(e) if require_cuda => return Err(format!("TTS_REQUIRE_CUDA=1 but Cuda is unusable: {e}")),
        Err(e) => eprintln!("parity: cuda skipped ({e})"),
    }
    Ok(b)
}
