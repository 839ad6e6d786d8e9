//! Cost of sealing and opening a 64-byte client secret, as a ratio against bare
//! AES-256-GCM (the same cipher with no envelope, no associated data building and
//! no zeroizing buffers), measured side by side in one run.
//!
//! Run with `cargo bench --bench crypto`. A ratio near 1.0 means the envelope
//! adds nothing measurable on top of the cipher itself.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, AeadCore, KeyInit};
use aes_gcm::Aes256Gcm;
use oidcvault::crypto::{Field, Keyring, SealContext};
use rand::rngs::OsRng;

/// Best of five rounds of `iters` calls, in nanoseconds per call.
fn measure(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(start.elapsed());
    }
    best.as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let iters = if std::env::args().any(|a| a == "--test") {
        10
    } else {
        200_000
    };
    let secret = [0x5au8; 64];
    let ctx = SealContext {
        domain_id: 42,
        field: Field::ClientSecret,
    };
    let keyring = Keyring::generate();
    let baseline = Aes256Gcm::new(&Aes256Gcm::generate_key(&mut OsRng));

    let bare_seal = measure(iters, || {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        black_box(baseline.encrypt(&nonce, black_box(&secret[..])).ok());
    });
    let seal = measure(iters, || {
        black_box(keyring.seal(black_box(&secret), ctx).ok());
    });
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let bare_ct = baseline.encrypt(&nonce, &secret[..]).unwrap_or_default();
    let bare_open = measure(iters, || {
        black_box(baseline.decrypt(&nonce, black_box(&bare_ct[..])).ok());
    });
    let sealed = keyring.seal(&secret, ctx).unwrap_or_default();
    let open = measure(iters, || {
        black_box(keyring.open(black_box(&sealed), ctx).ok());
    });

    println!(
        "seal 64 B: {seal:8.0} ns  bare AES-256-GCM {bare_seal:8.0} ns  ratio {:.2}",
        seal / bare_seal
    );
    println!(
        "open 64 B: {open:8.0} ns  bare AES-256-GCM {bare_open:8.0} ns  ratio {:.2}",
        open / bare_open
    );
}
