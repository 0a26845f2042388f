//! Slot-level continuous batching ([`Continuous`]): requests that join a running generator give
//! the same audio as [`Engine::synthesize`] alone; a cancelled request frees its slots at once; a
//! bad request is refused alone. On a small synthetic engine (its T3 never samples its stop token,
//! so every segment runs to `max_new_tokens`).
use std::collections::HashMap;

use tts_engine::Error;
use tts_engine::continuous::Continuous;
use tts_engine::speak::{Engine, SpeakOptions};
use tts_engine::synthesize::{Audio, Request};
use tts_kernels::Device;
use tts_kernels::testing::{fresh_seed, rel_l2};

mod common;

use common::{small_s3gen, small_t3};

fn engine(seed: u64, max_batch: usize) -> Engine {
    let mut e = Engine::synthetic(small_t3(), small_s3gen(), seed, &Device::cpu()).unwrap();
    e.batching.max_batch = max_batch;
    e.batching.poll_every = 2;
    e
}

fn request(text: &str, seed: u64, max_new_tokens: usize, cfm_steps: usize) -> Request {
    Request::new(text).with_options(SpeakOptions { seed, max_new_tokens, cfm_steps, ..Default::default() })
}

fn tokens(a: &Audio) -> Vec<Vec<u32>> {
    a.segments.iter().map(|s| s.speech_tokens.clone()).collect()
}

/// Requests submitted while others decode join the same generator (both decode in one round) and
/// each gives the tokens and waveform it gives alone through `Engine::synthesize`.
#[test]
fn requests_join_a_running_batch_and_sound_as_they_do_alone() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let engine = engine(seed, 4);
    let texts = ["First request, long enough to decode a while.", "Second. Two sentences here!", "Third one.", "A fourth."];
    let reqs: Vec<Request> =
        texts.iter().enumerate().map(|(i, t)| request(t, seed.wrapping_add(100 * i as u64), 10 + 3 * i, 1 + i % 2)).collect();
    let mut session = Continuous::new(&engine, 4);
    let mut done: HashMap<u64, Audio> = HashMap::new();
    let mut most_active = 0;
    let mut joined_while_decoding = false;
    let mut next = 0;
    while next < reqs.len() || !session.is_idle() {
        if next < reqs.len() {
            // one request per round: each arrives while the earlier ones decode
            let decoding = session.slots().0 > 0;
            session.submit(next as u64, reqs[next].clone()).unwrap();
            joined_while_decoding |= decoding;
            next += 1;
        }
        for (ticket, r) in session.step().unwrap() {
            done.insert(ticket, r.unwrap_or_else(|e| panic!("seed {seed} request {ticket}: {e}")));
        }
        most_active = most_active.max(session.slots().0);
    }
    assert!(joined_while_decoding, "no request arrived while another decoded");
    assert!(most_active >= 2, "requests never decoded together (most active slots {most_active})");
    assert_eq!(done.len(), reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let alone = engine.synthesize(std::slice::from_ref(r)).remove(0).unwrap();
        let got = &done[&(i as u64)];
        assert_eq!(tokens(got), tokens(&alone), "seed {seed} request {i}: tokens");
        let e = rel_l2(&alone.samples, &got.samples);
        assert!(e < 1e-4, "seed {seed} request {i}: waveform rel L2 {e:e}");
    }
}

/// A cancelled request's slots are free after the round it is cancelled in; the others finish with
/// their own audio; the ticket is then unknown.
#[test]
fn a_cancelled_request_frees_its_slots_at_once() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let engine = engine(seed, 4);
    let mut session = Continuous::new(&engine, 1);
    let keep = request("This one stays to the end.", seed, 12, 1);
    session.submit(1, request("This one is cancelled.", seed ^ 7, 28, 1)).unwrap();
    session.submit(2, keep.clone()).unwrap();
    assert!(session.step().unwrap().is_empty());
    assert_eq!(session.slots(), (2, 2));
    assert!(session.cancel(1).unwrap());
    assert_eq!(session.slots().0, 1, "the cancelled request's slot is free before the next step");
    assert!(!session.cancel(1).unwrap(), "a ticket is cancelled once");
    let out = session.run_to_end().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 2);
    let alone = engine.synthesize(&[keep]).remove(0).unwrap();
    assert_eq!(tokens(out[0].1.as_ref().unwrap()), tokens(&alone));
    assert!(session.is_idle());
    assert_eq!(session.slots(), (0, 0), "the generator is dropped when it has nothing to decode");
}

/// A bad request is refused at submit, naming its problem; nothing of it is queued; the session
/// goes on with the others. A ticket in use is refused.
#[test]
fn a_bad_request_is_refused_alone() {
    let seed = fresh_seed();
    let engine = engine(seed, 2);
    let mut session = Continuous::new(&engine, 2);
    session.submit(1, request("Fine.", seed, 5, 1)).unwrap();
    let e = session.submit(2, request("   ", seed, 5, 1)).unwrap_err();
    assert!(matches!(e, Error::Text { .. }), "{e}");
    let bad = Request::new("Fine too.").with_options(SpeakOptions { temperature: -1.0, ..Default::default() });
    assert!(matches!(session.submit(3, bad).unwrap_err(), Error::Setting { field: "temperature", .. }));
    assert!(matches!(session.submit(1, request("Again.", seed, 5, 1)).unwrap_err(), Error::Internal(_)));
    assert_eq!(session.requests(), 1);
    let out = session.run_to_end().unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].1.is_ok());
}
