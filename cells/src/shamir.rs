//! Shamir's secret sharing over GF(2^8).
//!
//! Each byte of the secret is the constant term of its own random polynomial
//! of degree `threshold - 1`; a share is the polynomial values at one x
//! coordinate, with that coordinate appended as the last byte (the layout
//! Vault uses, so a share of a 32-byte key is 33 bytes). Any `threshold`
//! shares recover the secret by Lagrange interpolation at x = 0; fewer are
//! consistent with every possible secret (Shamir, "How to share a secret",
//! CACM 1979).
//!
//! Arithmetic uses the AES field polynomial x^8 + x^4 + x^3 + x + 1 (0x11b)
//! and is branch-free and table-free, so timing does not depend on share
//! values. X coordinates are distinct, non-zero and chosen at random.

use std::fmt;

use sigil_hsm::SecretBytes;
use zeroize::Zeroizing;

/// Most shares a secret can be split into: x coordinates are the non-zero
/// elements of GF(256).
pub const MAX_SHARES: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    #[error("secret_shares must be between 1 and 255, got {0}")]
    Shares(u32),
    #[error("secret_threshold must be between 1 and secret_shares ({shares}), got {threshold}")]
    Threshold { shares: u32, threshold: u32 },
    #[error("secret_threshold must be at least 2 when secret_shares is greater than 1")]
    ThresholdOne,
    #[error("cannot split an empty secret")]
    EmptySecret,
    #[error("need at least {0} shares to combine")]
    TooFewShares(usize),
    #[error("shares have different lengths")]
    LengthMismatch,
    #[error("a share is too short")]
    ShareTooShort,
    #[error("two shares have the same x coordinate")]
    DuplicateShare,
    #[error("a share has the invalid x coordinate 0")]
    ZeroCoordinate,
}

/// Validated `(shares, threshold)`: 1 <= threshold <= shares <= 255, and
/// threshold 1 only for a single share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitParams {
    shares: u8,
    threshold: u8,
}

impl SplitParams {
    pub fn new(shares: u32, threshold: u32) -> Result<Self, ShamirError> {
        if shares == 0 || shares > u32::from(MAX_SHARES) {
            return Err(ShamirError::Shares(shares));
        }
        if threshold == 0 || threshold > shares {
            return Err(ShamirError::Threshold { shares, threshold });
        }
        if threshold == 1 && shares > 1 {
            return Err(ShamirError::ThresholdOne);
        }
        // Both fit in u8: checked against MAX_SHARES above.
        Ok(Self {
            shares: shares as u8,
            threshold: threshold as u8,
        })
    }

    pub fn shares(&self) -> u8 {
        self.shares
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }
}

/// One share: the polynomial values followed by the x coordinate.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(SecretBytes);

impl Share {
    pub fn from_bytes(bytes: SecretBytes) -> Self {
        Self(bytes)
    }

    /// The encoded share, for handing to its key holder.
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// The x coordinate, or `None` for a share too short to have one.
    pub fn x(&self) -> Option<u8> {
        self.0.expose().last().copied()
    }

    fn ys(&self) -> &[u8] {
        let b = self.0.expose();
        &b[..b.len().saturating_sub(1)]
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Share([redacted])")
    }
}

/// Splits `secret` with the system CSPRNG.
pub fn split(secret: &SecretBytes, params: SplitParams) -> Result<Vec<Share>, ShamirError> {
    split_with(secret, params, &mut |buf| {
        aws_lc_rs::rand::fill(buf).expect("system random number generator failed")
    })
}

/// Splits `secret` drawing randomness from `fill` (injected so tests and
/// simulations are reproducible).
pub fn split_with(
    secret: &SecretBytes,
    params: SplitParams,
    fill: &mut dyn FnMut(&mut [u8]),
) -> Result<Vec<Share>, ShamirError> {
    let secret = secret.expose();
    if secret.is_empty() {
        return Err(ShamirError::EmptySecret);
    }
    let n = usize::from(params.shares);
    let k = usize::from(params.threshold);
    let xs = random_coordinates(n, fill);

    let mut out: Vec<Zeroizing<Vec<u8>>> = (0..n)
        .map(|i| {
            let mut v = Zeroizing::new(vec![0u8; secret.len() + 1]);
            v[secret.len()] = xs[i];
            v
        })
        .collect();
    // coefficients[0] is the secret byte; the rest are uniformly random.
    let mut coefficients = Zeroizing::new(vec![0u8; k]);
    for (pos, &byte) in secret.iter().enumerate() {
        coefficients[0] = byte;
        fill(&mut coefficients[1..]);
        for (share, &x) in out.iter_mut().zip(&xs) {
            share[pos] = evaluate(&coefficients, x);
        }
    }
    Ok(out
        .into_iter()
        .map(|mut v| Share(SecretBytes::new(std::mem::take(&mut *v))))
        .collect())
}

/// Recovers the secret from `shares`. With fewer than the original threshold
/// the result is a well-formed but unrelated value: callers detect a wrong
/// result by authenticating what the secret unlocks.
pub fn combine(shares: &[Share]) -> Result<SecretBytes, ShamirError> {
    interpolate_at(shares, 0)
}

/// Value at `at` of the polynomials through `shares` (`combine` is `at = 0`).
fn interpolate_at(shares: &[Share], at: u8) -> Result<SecretBytes, ShamirError> {
    let first = shares.first().ok_or(ShamirError::TooFewShares(1))?;
    let len = first.expose().len();
    if len < 2 {
        return Err(ShamirError::ShareTooShort);
    }
    let mut xs = Vec::with_capacity(shares.len());
    for s in shares {
        if s.expose().len() != len {
            return Err(ShamirError::LengthMismatch);
        }
        let x = s.x().ok_or(ShamirError::ShareTooShort)?;
        if x == 0 {
            return Err(ShamirError::ZeroCoordinate);
        }
        if xs.contains(&x) {
            return Err(ShamirError::DuplicateShare);
        }
        xs.push(x);
    }
    // Lagrange basis at `at`: l_i = prod_{j != i} (at - x_j) / (x_i - x_j);
    // subtraction is XOR in GF(2^8).
    let basis: Vec<u8> = (0..xs.len())
        .map(|i| {
            let mut num = 1u8;
            let mut den = 1u8;
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    num = mul(num, at ^ xj);
                    den = mul(den, xs[i] ^ xj);
                }
            }
            mul(num, inv(den))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (share, &l) in shares.iter().zip(&basis) {
        for (acc, &y) in secret.iter_mut().zip(share.ys()) {
            *acc ^= mul(y, l);
        }
    }
    Ok(SecretBytes::new(std::mem::take(&mut *secret)))
}

/// `n` distinct non-zero coordinates in random order (Fisher–Yates over 1..=255).
fn random_coordinates(n: usize, fill: &mut dyn FnMut(&mut [u8])) -> Vec<u8> {
    let mut all: Vec<u8> = (1..=255).collect();
    for i in (1..all.len()).rev() {
        let j = uniform_below(i as u32 + 1, fill) as usize;
        all.swap(i, j);
    }
    all.truncate(n);
    all
}

/// Unbiased integer in `0..bound` by rejection sampling.
fn uniform_below(bound: u32, fill: &mut dyn FnMut(&mut [u8])) -> u32 {
    let zone = u32::MAX - (u32::MAX % bound);
    loop {
        let mut b = [0u8; 4];
        fill(&mut b);
        let v = u32::from_le_bytes(b);
        if v < zone {
            return v % bound;
        }
    }
}

/// Horner evaluation of the polynomial with `coefficients` (lowest first) at `x`.
fn evaluate(coefficients: &[u8], x: u8) -> u8 {
    coefficients
        .iter()
        .rev()
        .fold(0u8, |acc, &c| mul(acc, x) ^ c)
}

/// Constant-time multiplication in GF(2^8) modulo 0x11b.
fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut product = 0u8;
    for _ in 0..8 {
        // mask is 0xff when the low bit of b is set, else 0: no branch.
        product ^= a & (b & 1).wrapping_neg();
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse as a^254 (Fermat), constant time; inv(0) = 0.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    for _ in 0..8 {
        let m = (e & 1).wrapping_neg();
        result = (mul(result, base) & m) | (result & !m);
        base = mul(base, base);
        e >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic filler (xorshift) so proptest failures replay exactly.
    fn seeded(seed: u64) -> impl FnMut(&mut [u8]) {
        let mut state = seed | 1;
        move |buf: &mut [u8]| {
            for b in buf {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
        }
    }

    #[test]
    fn field_axioms_hold_exhaustively() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul(b, a));
            }
        }
        // Known AES values (FIPS-197 §4.2): {57}·{83} = {c1}, {57}·{13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        assert_eq!(inv(0), 0);
    }

    #[test]
    fn params_follow_vault_rules() {
        assert!(SplitParams::new(5, 3).is_ok());
        assert!(SplitParams::new(1, 1).is_ok());
        assert!(SplitParams::new(255, 255).is_ok());
        assert_eq!(SplitParams::new(0, 0), Err(ShamirError::Shares(0)));
        assert_eq!(SplitParams::new(256, 3), Err(ShamirError::Shares(256)));
        assert!(matches!(
            SplitParams::new(3, 5),
            Err(ShamirError::Threshold { .. })
        ));
        assert!(matches!(
            SplitParams::new(3, 0),
            Err(ShamirError::Threshold { .. })
        ));
        assert_eq!(SplitParams::new(3, 1), Err(ShamirError::ThresholdOne));
    }

    #[test]
    fn shares_are_secret_len_plus_one_with_distinct_nonzero_x() {
        let secret = SecretBytes::random(32);
        let shares = split(&secret, SplitParams::new(255, 2).expect("params")).expect("split");
        assert_eq!(shares.len(), 255);
        let mut xs: Vec<u8> = shares.iter().map(|s| s.x().expect("x")).collect();
        assert!(shares.iter().all(|s| s.expose().len() == 33));
        xs.sort_unstable();
        xs.dedup();
        assert_eq!(xs.len(), 255);
        assert!(!xs.contains(&0));
    }

    #[test]
    fn combine_rejects_malformed_sets() {
        let secret = SecretBytes::random(16);
        let shares = split(&secret, SplitParams::new(3, 2).expect("params")).expect("split");
        let dup = [shares[0].clone(), shares[0].clone()];
        assert_eq!(combine(&dup), Err(ShamirError::DuplicateShare));
        let short = Share::from_bytes(SecretBytes::copy_from(&[1, 2, 3]));
        assert_eq!(
            combine(&[shares[0].clone(), short]),
            Err(ShamirError::LengthMismatch)
        );
        assert_eq!(combine(&[]), Err(ShamirError::TooFewShares(1)));
        let mut zero = shares[1].expose().to_vec();
        *zero.last_mut().expect("non-empty") = 0;
        let zero = Share::from_bytes(SecretBytes::new(zero));
        assert_eq!(
            combine(&[shares[0].clone(), zero]),
            Err(ShamirError::ZeroCoordinate)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any `k` of the `n` shares, in any order, recover the secret.
        #[test]
        fn any_k_of_n_recover(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            n in 1u32..=20,
            k_frac in 0.0f64..=1.0,
            seed in any::<u64>(),
            pick_seed in any::<u64>(),
        ) {
            let k = if n == 1 { 1 } else { 2 + ((n - 2) as f64 * k_frac) as u32 };
            let params = SplitParams::new(n, k).expect("valid params");
            let secret = SecretBytes::new(secret);
            let shares = split_with(&secret, params, &mut seeded(seed)).expect("split");
            prop_assert_eq!(shares.len(), n as usize);
            // A pseudo-random subset of size k, in pseudo-random order.
            let mut idx: Vec<usize> = (0..n as usize).collect();
            let mut pick = seeded(pick_seed);
            for i in (1..idx.len()).rev() {
                let j = uniform_below(i as u32 + 1, &mut pick) as usize;
                idx.swap(i, j);
            }
            let subset: Vec<Share> = idx[..k as usize].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(combine(&subset).expect("combine"), secret.clone());
            // More than k shares also recover it.
            prop_assert_eq!(combine(&shares).expect("combine all"), secret);
        }

        /// k-1 shares are consistent with *every* candidate secret: for any
        /// candidate there is a k-th share that makes the set combine to it.
        /// So k-1 shares alone carry no information about the secret.
        #[test]
        fn k_minus_one_shares_fit_any_secret(
            secret in proptest::collection::vec(any::<u8>(), 1..32),
            candidate_seed in any::<u64>(),
            k in 2u32..=8,
            seed in any::<u64>(),
        ) {
            let n = k + 2;
            let secret = SecretBytes::new(secret);
            let shares = split_with(&secret, SplitParams::new(n, k).expect("params"), &mut seeded(seed)).expect("split");
            let known = &shares[..(k - 1) as usize];
            let mut candidate = vec![0u8; secret.len()];
            seeded(candidate_seed)(&mut candidate);
            // Points: the k-1 known shares plus (0, candidate).
            let mut with_candidate = known.to_vec();
            let fresh_x = (1..=255u8)
                .find(|x| !shares.iter().any(|s| s.x() == Some(*x)))
                .expect("a free coordinate");
            let forged = forge_share(known, &candidate, fresh_x);
            with_candidate.push(forged);
            let recovered = combine(&with_candidate).expect("combine");
            prop_assert_eq!(recovered.expose(), candidate.as_slice());
            // And k-1 shares on their own do not produce the secret (except by
            // negligible chance on a single byte).
            if secret.len() >= 4 {
                prop_assert_ne!(combine(known).expect("combine"), secret);
            }
        }

        /// Two splits of one secret never hand out the same shares.
        #[test]
        fn shares_are_randomised(secret in proptest::collection::vec(any::<u8>(), 8..33)) {
            let secret = SecretBytes::new(secret);
            let params = SplitParams::new(5, 3).expect("params");
            let a = split(&secret, params).expect("split");
            let b = split(&secret, params).expect("split");
            for s in &a {
                prop_assert!(!b.contains(s));
                prop_assert_ne!(s.ys(), secret.expose());
            }
        }
    }

    /// The share at `x` of the degree-(k-1) polynomial through `known` and
    /// (0, candidate): the polynomial exists and is unique by Lagrange.
    fn forge_share(known: &[Share], candidate: &[u8], x: u8) -> Share {
        let xs: Vec<u8> = std::iter::once(0)
            .chain(known.iter().map(|s| s.x().expect("x")))
            .collect();
        let ys: Vec<&[u8]> = std::iter::once(candidate)
            .chain(known.iter().map(|s| s.ys()))
            .collect();
        let mut out = vec![0u8; candidate.len()];
        for i in 0..xs.len() {
            let mut num = 1u8;
            let mut den = 1u8;
            for j in 0..xs.len() {
                if i != j {
                    num = mul(num, x ^ xs[j]);
                    den = mul(den, xs[i] ^ xs[j]);
                }
            }
            let l = mul(num, inv(den));
            for (o, &y) in out.iter_mut().zip(ys[i]) {
                *o ^= mul(y, l);
            }
        }
        out.push(x);
        Share::from_bytes(SecretBytes::new(out))
    }
}
