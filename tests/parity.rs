//! The parity harness (a custom test main): every fixture case, on Cpu (f32 tolerance) and, in builds
//! with the `emu` feature, on Emu (bf16 tolerance). Prints one line per case and backend, then
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
    let backends: &[&str] = if cfg!(feature = "emu") { &["cpu", "emu"] } else { &["cpu"] };
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
            let tol = if b == "emu" { Tolerance { bf16: true, ..case.meta.tolerance.bf16 } } else { case.meta.tolerance.f32 };
            match run(&case, b, tol) {
                Ok(Outcome::Passed(r)) => {
                    let worst = r.iter().map(|t| t.max_rel).fold(0.0f64, f64::max);
                    println!("parity ok      {:<34} {b:<5} {} tensors, max rel err {worst:.2e}", case.name, r.len());
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
