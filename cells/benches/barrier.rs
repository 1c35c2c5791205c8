//! Barrier and seal benchmarks.
//!
//! * `barrier_bytes/*`, `barrier_ops/*`: AES-256-GCM seal (put) and open (get)
//!   of 1 KiB values through the barrier over in-memory storage, so the
//!   figures are the barrier's own cost (MiB/s and ops/s).
//! * `unseal/shamir_5_of_3`: sealing, then unsealing with three of five shares
//!   (share decoding, Lagrange combination, root-key and keyring decryption).
//! * `unseal/softhsm`: sealing, then auto-unsealing through SoftHSM2
//!   (PKCS#11 `C_Decrypt` with CKM_AES_GCM, plus the keyring decryption).
//!
//! Run: `cargo bench -p sigil-cell --bench barrier`. SoftHSM2 needs
//! `SOFTHSM2_CONF` in the environment of the process that loads it, so the
//! bench creates a throwaway token and re-runs itself with that set.

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::sync::Arc;

use criterion::{Criterion, Throughput};
use sigil_cell::barrier::{Barrier, BarrierConfig};
use sigil_cell::seal::{InitParams, SealBackend, SealManager};
use sigil_cell::storage::{MemoryStorage, Storage};
use sigil_hsm::{
    KeyLabel, KeyProvider, Pkcs11Config, Pkcs11KeyProvider, SecretBytes, SecretString,
};

const VALUE_LEN: usize = 1024;

fn unsealed_barrier() -> Barrier {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let barrier = Barrier::new(storage.clone(), BarrierConfig::default());
    let root = SecretBytes::random(32);
    let init = barrier.initialize(&root).expect("init");
    sigil_cell::storage::wait(storage.apply(init)).expect("store keyring");
    barrier
}

fn bench_barrier(c: &mut Criterion) {
    let barrier = unsealed_barrier();
    let value = SecretBytes::random(VALUE_LEN);
    for i in 0..1024 {
        sigil_cell::storage::wait(barrier.put(&format!("bench/{i}"), value.expose())).expect("put");
    }
    for (group_name, throughput) in [
        ("barrier_bytes", Throughput::Bytes(VALUE_LEN as u64)),
        ("barrier_ops", Throughput::Elements(1)),
    ] {
        let mut g = c.benchmark_group(group_name);
        g.throughput(throughput);
        let mut i = 0u64;
        g.bench_function("seal_put_1KiB", |b| {
            b.iter(|| {
                i += 1;
                sigil_cell::storage::wait(
                    barrier.put(&format!("bench/{}", i % 1024), black_box(value.expose())),
                )
                .expect("put");
            })
        });
        let mut j = 0u64;
        g.bench_function("open_get_1KiB", |b| {
            b.iter(|| {
                j += 1;
                black_box(barrier.get(&format!("bench/{}", j % 1024)).expect("get"));
            })
        });
        g.finish();
    }
}

fn bench_unseal(c: &mut Criterion) {
    let mut g = c.benchmark_group("unseal");

    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let shamir = SealManager::open(
        Barrier::new(storage, BarrierConfig::default()),
        SealBackend::Shamir,
        None,
    )
    .expect("open");
    let out = shamir
        .init(InitParams {
            secret_shares: 5,
            secret_threshold: 3,
            ..InitParams::default()
        })
        .expect("init");
    g.bench_function("shamir_5_of_3", |b| {
        b.iter(|| {
            for share in &out.keys[1..4] {
                shamir.unseal(share.clone()).expect("unseal");
            }
            assert!(!shamir.is_sealed());
            shamir.seal().expect("seal");
        })
    });

    let config = Pkcs11Config {
        module: std::env::var("SIGIL_BENCH_HSM_MODULE")
            .expect("module")
            .into(),
        token_label: std::env::var("SIGIL_BENCH_HSM_TOKEN").expect("token"),
        pin: SecretString::new(std::env::var("SIGIL_BENCH_HSM_PIN").expect("pin")),
    };
    let provider: Arc<dyn KeyProvider> =
        Arc::new(Pkcs11KeyProvider::open(config).expect("open softhsm"));
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let backend = SealBackend::Hsm {
        open: Arc::new(move || Ok(provider.clone())),
        key_label: KeyLabel::new("bench-root-wrap").expect("label"),
    };
    let hsm = SealManager::open(
        Barrier::new(storage, BarrierConfig::default()),
        backend,
        None,
    )
    .expect("open");
    hsm.init(InitParams::default()).expect("init");
    g.bench_function("softhsm", |b| {
        b.iter(|| {
            hsm.seal().expect("seal");
            // A manual seal normally holds until restart; the bench re-arms
            // the auto-unseal path the way a restarted node would.
            hsm.auto_unseal().expect("auto-unseal");
        })
    });
    g.finish();
}

fn main() -> ExitCode {
    if std::env::var_os("SIGIL_BENCH_HSM_PIN").is_none() {
        let hsm =
            sigil_hsm::softhsm::SoftHsm::new().expect("softhsm2 must be installed (see README)");
        let exe = std::env::current_exe().expect("bench binary path");
        let status = Command::new(exe)
            .args(std::env::args().skip(1))
            .env("SOFTHSM2_CONF", hsm.conf_path())
            .env("SIGIL_BENCH_HSM_MODULE", hsm.module_path())
            .env("SIGIL_BENCH_HSM_TOKEN", hsm.token_label())
            .env("SIGIL_BENCH_HSM_PIN", hsm.pin().expose())
            .status()
            .expect("re-run bench");
        return if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let mut c = Criterion::default().configure_from_args();
    bench_barrier(&mut c);
    bench_unseal(&mut c);
    c.final_summary();
    ExitCode::SUCCESS
}
