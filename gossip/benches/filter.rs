//! Revocation filter lookups as the number of records grows: an exact
//! match costs the same at 100 and 1,000,000 records; an identity pattern
//! lookup grows with the identity's depth, not with the record count.
//!
//! `cargo bench -p sigil-gossip --bench filter`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sigil_gossip::{Credential, Filter, Kind, Revocation, Target};

fn filled(n: usize) -> Filter {
    let mut f = Filter::new();
    for i in 0..n {
        let target = match i % 4 {
            0 => Target::Accessor(format!("accessor-{i}")),
            1 => Target::LeasePrefix(format!("database/creds/role-{i}")),
            2 => Target::Identity(format!("spiffe://prod.example/ns/team-{i}/*")),
            _ => Target::Role {
                mount: "auth/approle/".into(),
                role: format!("role-{i}"),
            },
        };
        f.insert(Revocation {
            id: format!("r{i}"),
            kind: Kind::Revoke,
            target,
            reason: String::new(),
            issued_at_ms: 1_000,
            expires_ms: u64::MAX,
            lifted: false,
        });
    }
    f
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("revocation_filter");
    for n in [100usize, 10_000, 1_000_000] {
        let f = filled(n);
        // A credential that matches nothing: every index is consulted.
        let clean = Credential {
            accessor: Some("accessor-none"),
            lease_id: Some("database/creds/other/abc"),
            identity: Some("spiffe://prod.example/ns/other/sa/api"),
            role: Some(("auth/approle/", "other")),
            issued_at_ms: 10,
            ..Credential::default()
        };
        g.bench_with_input(BenchmarkId::new("clean_credential", n), &f, |b, f| {
            b.iter(|| f.revoked(std::hint::black_box(&clean)))
        });
        let hit = Credential {
            identity: Some("spiffe://prod.example/ns/team-2/sa/api"),
            issued_at_ms: 10,
            ..Credential::default()
        };
        g.bench_with_input(BenchmarkId::new("identity_hit", n), &f, |b, f| {
            b.iter(|| f.revoked(std::hint::black_box(&hit)))
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
