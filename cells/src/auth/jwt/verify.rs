//! Offline verification of signed JWTs (SPIFFE JWT-SVIDs, Kubernetes
//! service-account tokens) against configured public keys.
//!
//! Only the JWS compact serialization is accepted (RFC 7515 §7.1): three
//! unpadded base64url segments. Keys come from PEM (`PUBLIC KEY` or
//! `CERTIFICATE` blocks) or a JWKS document (RFC 7517), never from the token:
//! `jwk`, `jku`, `x5c` and `x5u` headers are ignored, because a key the token
//! brings with it proves nothing. Claims are returned unvalidated; see
//! [`super::claims`] for that.
//!
//! The algorithm-confusion defences (RFC 8725 §2.1, §3.1) live here: `none`
//! and the HMAC algorithms are refused outright, and an algorithm is only
//! ever tried against a key of the type it was defined for.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    RSA_PSS_2048_8192_SHA256, RSA_PSS_2048_8192_SHA384, RSA_PSS_2048_8192_SHA512, RsaParameters,
    RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Tokens longer than this are refused before any parsing. JWT-SVIDs and
/// service-account tokens are around 1 KiB; the cap bounds the work an
/// unauthenticated caller can make us do.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// RSA moduli outside this range are refused when a key is loaded, matching
/// the aws-lc-rs `*_2048_8192_*` verification parameters (RFC 8725 §3.5 asks
/// for at least 2048 bits).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Token header and payload segments are base64url without padding
/// (RFC 7515 §2, "Base64url Encoding"); anything else is refused so a token
/// has exactly one spelling.
const TOKEN_B64: GeneralPurpose = URL_SAFE_NO_PAD;

/// JWK members are also unpadded base64url (RFC 7518 §6), but the JWKS is
/// operator configuration, not attacker input, so tolerate padding there.
const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JWS signature algorithm this verifier implements (RFC 7518 §3.1,
/// RFC 8037 §3.1 for `EdDSA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::EdDsa,
    ];

    /// The registered `alg` name (RFC 7518 §3.1).
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// Exact, case-sensitive lookup: `alg` values are case-sensitive
    /// (RFC 7515 §4.1.1), so `rs256` is not `RS256`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The only key type this algorithm may be used with. Tying each
    /// algorithm to one key type is what stops a token from choosing how its
    /// verifier interprets a key (RFC 8725 §3.1).
    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                KeyKind::Rsa
            }
            Alg::Es256 => KeyKind::P256,
            Alg::Es384 => KeyKind::P384,
            Alg::EdDsa => KeyKind::Ed25519,
        }
    }

    /// PS* use a salt as long as the digest (RFC 7518 §3.5), which is
    /// aws-lc-rs's default for these parameters.
    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        match self {
            Alg::Rs256 => Some(&RSA_PKCS1_2048_8192_SHA256),
            Alg::Rs384 => Some(&RSA_PKCS1_2048_8192_SHA384),
            Alg::Rs512 => Some(&RSA_PKCS1_2048_8192_SHA512),
            Alg::Ps256 => Some(&RSA_PSS_2048_8192_SHA256),
            Alg::Ps384 => Some(&RSA_PSS_2048_8192_SHA384),
            Alg::Ps512 => Some(&RSA_PSS_2048_8192_SHA512),
            Alg::Es256 | Alg::Es384 | Alg::EdDsa => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses an `alg` name, from a token header or from configuration (Vault's
/// `jwt_supported_algs`), explaining why a name is refused.
impl FromStr for Alg {
    type Err = JwtError;

    fn from_str(name: &str) -> Result<Self, JwtError> {
        if name.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgNone);
        }
        if ["HS256", "HS384", "HS512"]
            .iter()
            .any(|hmac| name.eq_ignore_ascii_case(hmac))
        {
            return Err(JwtError::HmacAlg {
                alg: printable(name),
            });
        }
        Self::from_name(name).ok_or_else(|| JwtError::UnsupportedAlg {
            alg: printable(name),
        })
    }
}

/// The type of a public key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// Why a token was refused. Messages are safe to return to the client: they
/// never contain the token or key bytes, only (shortened) `alg` and `kid`
/// values the client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    #[error("token is longer than 16 KiB")]
    TooLarge,
    #[error("token is not a JWS compact serialization of three segments")]
    Malformed,
    #[error("token {segment} segment is not unpadded base64url")]
    Base64 { segment: Segment },
    #[error("token header is not a JSON object")]
    HeaderNotObject,
    #[error("token header has no string \"alg\"")]
    MissingAlg,
    #[error("token header field \"{field}\" must be a string")]
    HeaderFieldType { field: &'static str },
    #[error("unsigned tokens (alg \"none\") are not accepted")]
    AlgNone,
    /// The classic confusion attack: a public key used as an HMAC secret.
    #[error("symmetric algorithm \"{alg}\" is not accepted")]
    HmacAlg { alg: String },
    #[error("unsupported algorithm \"{alg}\"")]
    UnsupportedAlg { alg: String },
    #[error("algorithm \"{alg}\" is not allowed")]
    AlgNotAllowed { alg: Alg },
    /// RFC 7515 §4.1.11: extensions we do not understand must be refused.
    #[error("critical header extensions (\"crit\") are not supported")]
    CritHeader,
    #[error("no configured key has kid \"{kid}\"")]
    UnknownKid { kid: String },
    #[error("no configured key can verify algorithm \"{alg}\"")]
    NoCompatibleKey { alg: Alg },
    #[error("token signature verification failed")]
    BadSignature,
    #[error("token claims are not a JSON object")]
    ClaimsNotObject,
}

/// Which of the three token segments a [`JwtError::Base64`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Header,
    Payload,
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// Why configured key material was refused. These go to an operator, not a
/// token bearer, but still never contain key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("PEM input could not be read")]
    Pem,
    #[error("PEM input holds a private key; configure public keys only")]
    PemPrivateKey,
    #[error("PEM input holds no PUBLIC KEY or CERTIFICATE block")]
    NoPemKeys,
    #[error("PEM block {index}: {problem}")]
    InvalidPemKey { index: usize, problem: KeyProblem },
    #[error("JWKS is not a JSON object with a \"keys\" array (line {line}, column {column})")]
    JwksJson { line: usize, column: usize },
    #[error("JWKS \"keys\" is empty")]
    EmptyJwks,
    #[error("JWKS key {index}: {problem}")]
    InvalidJwk { index: usize, problem: KeyProblem },
    #[error("JWKS key {index} holds private key material; configure public keys only")]
    JwkPrivateKey { index: usize },
    #[error("JWKS has no usable signing key ({skipped} skipped; first: {first})")]
    NoUsableJwk { skipped: usize, first: SkipReason },
}

/// What is wrong with one configured key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    #[error("not a DER SubjectPublicKeyInfo")]
    Spki,
    #[error("not a DER X.509 certificate")]
    Certificate,
    #[error("unsupported public key algorithm")]
    UnsupportedKeyType,
    #[error("unsupported elliptic curve (P-256, P-384 and Ed25519 are supported)")]
    UnsupportedCurve,
    #[error("RSA modulus must be 2048 to 8192 bits")]
    RsaSize,
    #[error("RSA public exponent must be odd and between 3 and 2^32")]
    RsaExponent,
    #[error("EC point must be uncompressed and of the curve's size")]
    EcPointEncoding,
    #[error("\"{0}\" has the wrong length for the curve")]
    CoordinateLength(&'static str),
    #[error("public key was rejected by the crypto library")]
    Rejected,
    #[error("missing member \"{0}\"")]
    MissingMember(&'static str),
    #[error("member \"{0}\" is not base64url")]
    Base64(&'static str),
    #[error("alg \"{0}\" does not fit the key type")]
    AlgMismatch(Alg),
}

/// Why a JWKS entry was passed over rather than refused: a JWKS may
/// legitimately carry keys for other purposes or newer algorithms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipReason {
    #[error("kty \"{0}\" is not supported")]
    Kty(String),
    #[error("crv \"{0}\" is not supported")]
    Curve(String),
    #[error("use \"{0}\" is not \"sig\"")]
    Use(String),
    #[error("key_ops does not include \"verify\"")]
    KeyOps,
    #[error("alg \"{0}\" is not supported")]
    Alg(String),
}

/// The protected header fields a caller may care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A token whose signature verified. The claims are still unchecked: pass
/// them to [`super::claims::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// One configured public key, with the `kid` and `alg` the JWKS gave it.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Option<Alg>,
    kind: KeyKind,
    material: Material,
}

/// Key bytes in the form aws-lc-rs verifies with.
#[derive(Clone)]
enum Material {
    /// Kept as components because one RSA key serves six algorithms, and a
    /// `ParsedPublicKey` is bound to one.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// EC and Ed25519 keys serve exactly one algorithm each, so they are
    /// parsed (and checked to be on the curve) once, at load time.
    Parsed(ParsedPublicKey),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Loads every `PUBLIC KEY` (SubjectPublicKeyInfo) and `CERTIFICATE`
    /// block of `pem`, in order. A certificate is only a container for its
    /// key here: its validity period and issuer are not checked, as in
    /// Vault's `jwt_validation_pubkeys`. Private keys are refused rather than
    /// ignored, since pasting one into configuration is a leak to fix.
    pub fn from_pem(pem: &str) -> Result<Vec<VerifyingKey>, KeyError> {
        let mut keys = Vec::new();
        for (index, item) in rustls_pemfile::read_all(&mut pem.as_bytes()).enumerate() {
            let loaded = match item.map_err(|_| KeyError::Pem)? {
                rustls_pemfile::Item::SubjectPublicKeyInfo(der) => from_spki_der(der.as_ref()),
                rustls_pemfile::Item::X509Certificate(der) => from_certificate_der(der.as_ref()),
                rustls_pemfile::Item::Pkcs1Key(_)
                | rustls_pemfile::Item::Pkcs8Key(_)
                | rustls_pemfile::Item::Sec1Key(_) => return Err(KeyError::PemPrivateKey),
                // CRLs and CSRs carry no key to trust.
                _ => continue,
            };
            let (kind, material) =
                loaded.map_err(|problem| KeyError::InvalidPemKey { index, problem })?;
            keys.push(VerifyingKey {
                kid: None,
                alg: None,
                kind,
                material,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoPemKeys);
        }
        Ok(keys)
    }

    /// Loads the signing keys of a JWKS document (RFC 7517 §5). Entries of
    /// an unknown `kty`, `crv` or `alg`, or marked for another `use` or
    /// `key_ops`, are skipped; a malformed entry of a known type is an error,
    /// since it is a configuration mistake rather than a key for someone else.
    pub fn from_jwks(json: &str) -> Result<Vec<VerifyingKey>, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeyError::JwksJson {
            line: e.line(),
            column: e.column(),
        })?;
        if set.keys.is_empty() {
            return Err(KeyError::EmptyJwks);
        }
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            match jwk.load(index)? {
                Ok(key) => keys.push(key),
                Err(reason) => skipped.push(reason),
            }
        }
        if keys.is_empty() {
            let count = skipped.len();
            if let Some(first) = skipped.into_iter().next() {
                return Err(KeyError::NoUsableJwk {
                    skipped: count,
                    first,
                });
            }
        }
        Ok(keys)
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn alg(&self) -> Option<Alg> {
        self.alg
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether this key may verify a token signed with `alg`: the key type
    /// must be the algorithm's, and a JWK's own `alg` must agree
    /// (RFC 7517 §4.4).
    fn accepts(&self, alg: Alg) -> bool {
        self.kind == alg.key_kind() && self.alg.is_none_or(|own| own == alg)
    }

    /// Only call after [`Self::accepts`] returned true for `alg`.
    fn verifies(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        match (&self.material, alg.rsa_parameters()) {
            (Material::Rsa { n, e }, Some(params)) => RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok(),
            // The parsed key carries the one algorithm its type allows.
            (Material::Parsed(key), None) => key.verify_sig(message, signature).is_ok(),
            _ => false,
        }
    }
}

/// Verifies `token` against `keys` and returns its header and claims.
///
/// `allowed_algs` is the role's `jwt_supported_algs`; empty allows every
/// [`Alg`]. Keys are chosen by `kid` when the token names one and any
/// configured key has one (RFC 7515 §4.1.4); otherwise every key of the
/// right type is tried.
pub fn verify(
    token: &str,
    keys: &[VerifyingKey],
    allowed_algs: &[Alg],
) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed);
    };
    // The JWS Signing Input is the first two segments as sent (RFC 7515 §5.2).
    let signing_input = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(JwtError::Malformed)?;

    let header = parse_header(&decode(header_b64, Segment::Header)?)?;
    if !allowed_algs.is_empty() && !allowed_algs.contains(&header.alg) {
        return Err(JwtError::AlgNotAllowed { alg: header.alg });
    }
    let signature = decode(signature_b64, Segment::Signature)?;

    let candidates = select_keys(keys, &header)?;
    if !candidates
        .iter()
        .any(|key| key.verifies(header.alg, signing_input.as_bytes(), &signature))
    {
        return Err(JwtError::BadSignature);
    }

    // Only now that it is authenticated is the payload parsed.
    let claims = match serde_json::from_slice(&decode(payload_b64, Segment::Payload)?) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(JwtError::ClaimsNotObject),
    };
    Ok(Verified { header, claims })
}

fn decode(segment: &str, which: Segment) -> Result<Vec<u8>, JwtError> {
    TOKEN_B64
        .decode(segment)
        .map_err(|_| JwtError::Base64 { segment: which })
}

/// Parses the JOSE header (RFC 7515 §4). Duplicate member names resolve to
/// the last one, which §4 permits.
fn parse_header(bytes: &[u8]) -> Result<Header, JwtError> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(JwtError::HeaderNotObject);
    };
    let Some(Value::String(alg)) = fields.get("alg") else {
        return Err(JwtError::MissingAlg);
    };
    let alg = alg.parse::<Alg>()?;
    if fields.contains_key("crit") {
        return Err(JwtError::CritHeader);
    }
    Ok(Header {
        alg,
        kid: optional_string(&fields, "kid")?,
        typ: optional_string(&fields, "typ")?,
    })
}

fn optional_string(
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, JwtError> {
    match fields.get(field) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(JwtError::HeaderFieldType { field }),
    }
}

/// The keys worth trying for this header, or why there are none.
fn select_keys<'k>(
    keys: &'k [VerifyingKey],
    header: &Header,
) -> Result<Vec<&'k VerifyingKey>, JwtError> {
    let by_kid: Vec<&VerifyingKey> = match &header.kid {
        Some(kid) if keys.iter().any(|key| key.kid.is_some()) => {
            let named: Vec<_> = keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid.as_str()))
                .collect();
            if named.is_empty() {
                return Err(JwtError::UnknownKid {
                    kid: printable(kid),
                });
            }
            named
        }
        _ => keys.iter().collect(),
    };
    let usable: Vec<_> = by_kid
        .into_iter()
        .filter(|key| key.accepts(header.alg))
        .collect();
    if usable.is_empty() {
        return Err(JwtError::NoCompatibleKey { alg: header.alg });
    }
    Ok(usable)
}

/// A client-supplied string made safe to put in an error message: at most
/// 64 characters, control characters replaced.
fn printable(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn from_certificate_der(der: &[u8]) -> Result<(KeyKind, Material), KeyProblem> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => from_spki(cert.public_key()),
        _ => Err(KeyProblem::Certificate),
    }
}

fn from_spki_der(der: &[u8]) -> Result<(KeyKind, Material), KeyProblem> {
    match SubjectPublicKeyInfo::from_der(der) {
        Ok(([], spki)) => from_spki(&spki),
        _ => Err(KeyProblem::Spki),
    }
}

/// RFC 5280 §4.1.2.7 with the key encodings of RFC 3279 (RSA), RFC 5480
/// (EC) and RFC 8410 (Ed25519).
fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<(KeyKind, Material), KeyProblem> {
    if spki.subject_public_key.unused_bits != 0 {
        return Err(KeyProblem::Spki);
    }
    let algorithm = &spki.algorithm.algorithm;
    let bits: &[u8] = &spki.subject_public_key.data;
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                Ok((KeyKind::Rsa, rsa_material(rsa.modulus, rsa.exponent)?))
            }
            _ => Err(KeyProblem::Spki),
        }
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.as_oid().ok());
        let kind = match curve {
            Some(oid) if oid == OID_EC_P256 => KeyKind::P256,
            Some(oid) if oid == OID_NIST_EC_P384 => KeyKind::P384,
            _ => return Err(KeyProblem::UnsupportedCurve),
        };
        Ok((kind, ec_material(kind, bits)?))
    } else if *algorithm == OID_SIG_ED25519 {
        // RFC 8410 §3: the parameters must be absent.
        if spki.algorithm.parameters.is_some() {
            return Err(KeyProblem::Spki);
        }
        Ok((KeyKind::Ed25519, ed25519_material(bits)?))
    } else {
        Err(KeyProblem::UnsupportedKeyType)
    }
}

/// Checks size and exponent up front so a weak key fails at configuration
/// time rather than on every login.
fn rsa_material(n: &[u8], e: &[u8]) -> Result<Material, KeyProblem> {
    // aws-lc-rs wants both without leading zeros; DER integers may have one.
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = match n.first() {
        Some(top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !RSA_BITS.contains(&bits) {
        return Err(KeyProblem::RsaSize);
    }
    let exponent = match e.len() {
        1..=4 => e
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
        _ => 0,
    };
    if exponent < 3 || exponent % 2 == 0 {
        return Err(KeyProblem::RsaExponent);
    }
    Ok(Material::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// `point` is SEC 1 §2.3.3 uncompressed, `0x04 || x || y`; aws-lc-rs checks
/// it lies on the curve.
fn ec_material(kind: KeyKind, point: &[u8]) -> Result<Material, KeyProblem> {
    let (coordinate_len, algorithm): (usize, &'static dyn VerificationAlgorithm) = match kind {
        KeyKind::P256 => (32, &ECDSA_P256_SHA256_FIXED),
        KeyKind::P384 => (48, &ECDSA_P384_SHA384_FIXED),
        KeyKind::Rsa | KeyKind::Ed25519 => return Err(KeyProblem::UnsupportedCurve),
    };
    if point.len() != 1 + 2 * coordinate_len || point.first() != Some(&0x04) {
        return Err(KeyProblem::EcPointEncoding);
    }
    ParsedPublicKey::new(algorithm, point)
        .map(Material::Parsed)
        .map_err(|_| KeyProblem::Rejected)
}

fn ed25519_material(raw: &[u8]) -> Result<Material, KeyProblem> {
    if raw.len() != aws_lc_rs::signature::ED25519_PUBLIC_KEY_LEN {
        return Err(KeyProblem::CoordinateLength("x"));
    }
    ParsedPublicKey::new(&ED25519, raw)
        .map(Material::Parsed)
        .map_err(|_| KeyProblem::Rejected)
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The JWK members this verifier reads (RFC 7517 §4, RFC 7518 §6,
/// RFC 8037 §2); others are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(rename = "use")]
    key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    kid: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Present only in private keys (RFC 7518 §6.2.2.1, §6.3.2.1).
    d: Option<serde::de::IgnoredAny>,
}

impl Jwk {
    /// The outer error refuses the whole JWKS; the inner one skips this key.
    fn load(&self, index: usize) -> Result<Result<VerifyingKey, SkipReason>, KeyError> {
        if self.d.is_some() {
            return Err(KeyError::JwkPrivateKey { index });
        }
        if let Some(key_use) = self.key_use.as_deref().filter(|key_use| *key_use != "sig") {
            return Ok(Err(SkipReason::Use(printable(key_use))));
        }
        if self
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return Ok(Err(SkipReason::KeyOps));
        }
        let alg = match self.alg.as_deref() {
            None => None,
            Some(name) => match Alg::from_name(name) {
                Some(alg) => Some(alg),
                None => return Ok(Err(SkipReason::Alg(printable(name)))),
            },
        };
        let curve = self.crv.as_deref().unwrap_or_default();
        let kind = match (self.kty.as_str(), curve) {
            ("RSA", _) => KeyKind::Rsa,
            ("EC", "P-256") => KeyKind::P256,
            ("EC", "P-384") => KeyKind::P384,
            ("OKP", "Ed25519") => KeyKind::Ed25519,
            ("EC" | "OKP", _) => return Ok(Err(SkipReason::Curve(printable(curve)))),
            (kty, _) => return Ok(Err(SkipReason::Kty(printable(kty)))),
        };
        let invalid = |problem| KeyError::InvalidJwk { index, problem };
        if let Some(alg) = alg.filter(|alg| alg.key_kind() != kind) {
            return Err(invalid(KeyProblem::AlgMismatch(alg)));
        }
        let material = self.material(kind).map_err(invalid)?;
        Ok(Ok(VerifyingKey {
            kid: self.kid.clone(),
            alg,
            kind,
            material,
        }))
    }

    fn material(&self, kind: KeyKind) -> Result<Material, KeyProblem> {
        match kind {
            KeyKind::Rsa => rsa_material(&member(&self.n, "n")?, &member(&self.e, "e")?),
            KeyKind::P256 | KeyKind::P384 => {
                let size = if kind == KeyKind::P256 { 32 } else { 48 };
                let x = member(&self.x, "x")?;
                let y = member(&self.y, "y")?;
                // RFC 7518 §6.2.1.2: coordinates are exactly the curve's size.
                if x.len() != size {
                    return Err(KeyProblem::CoordinateLength("x"));
                }
                if y.len() != size {
                    return Err(KeyProblem::CoordinateLength("y"));
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ec_material(kind, &point)
            }
            KeyKind::Ed25519 => ed25519_material(&member(&self.x, "x")?),
        }
    }
}

fn member(value: &Option<String>, name: &'static str) -> Result<Vec<u8>, KeyProblem> {
    let text = value.as_deref().ok_or(KeyProblem::MissingMember(name))?;
    JWK_B64.decode(text).map_err(|_| KeyProblem::Base64(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{
        self, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, RsaEncoding, RsaKeyPair,
    };
    use base64::engine::general_purpose;
    use serde_json::json;
    use std::sync::OnceLock;

    /// A test signer; RSA keys are slow to make, so two are made once.
    enum Signer {
        Rsa(&'static RsaKeyPair),
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    fn rsa_pair(which: usize) -> &'static RsaKeyPair {
        static PAIRS: OnceLock<[RsaKeyPair; 2]> = OnceLock::new();
        &PAIRS.get_or_init(|| {
            [
                RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
                RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ]
        })[which]
    }

    fn rsa(which: usize) -> Signer {
        Signer::Rsa(rsa_pair(which))
    }
    fn p256() -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }
    fn p384() -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap())
    }
    fn ed25519() -> Signer {
        Signer::Ed(Ed25519KeyPair::generate().unwrap())
    }

    impl Signer {
        fn sign(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
            match self {
                Signer::Rsa(pair) => {
                    let encoding: &'static dyn RsaEncoding = match alg {
                        Alg::Rs256 => &signature::RSA_PKCS1_SHA256,
                        Alg::Rs384 => &signature::RSA_PKCS1_SHA384,
                        Alg::Rs512 => &signature::RSA_PKCS1_SHA512,
                        Alg::Ps256 => &signature::RSA_PSS_SHA256,
                        Alg::Ps384 => &signature::RSA_PSS_SHA384,
                        _ => &signature::RSA_PSS_SHA512,
                    };
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(encoding, &SystemRandom::new(), message, &mut out)
                        .unwrap();
                    out
                }
                Signer::Ec(pair) => pair
                    .sign(&SystemRandom::new(), message)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            }
        }

        fn spki_der(&self) -> Vec<u8> {
            match self {
                Signer::Rsa(pair) => pair.public_key().as_der().unwrap().as_ref().to_vec(),
                Signer::Ec(pair) => pair.public_key().as_der().unwrap().as_ref().to_vec(),
                Signer::Ed(pair) => pair.public_key().as_der().unwrap().as_ref().to_vec(),
            }
        }

        fn pem(&self) -> String {
            pem_block("PUBLIC KEY", &self.spki_der())
        }

        /// The public key as a JWK, built from aws-lc-rs's own accessors so
        /// the test does not lean on the code under test.
        fn jwk(&self, kid: &str) -> Value {
            let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
            match self {
                Signer::Rsa(pair) => json!({
                    "kty": "RSA", "kid": kid,
                    "n": b64(pair.public_key().modulus().big_endian_without_leading_zero()),
                    "e": b64(pair.public_key().exponent().big_endian_without_leading_zero()),
                }),
                Signer::Ec(pair) => {
                    let point = pair.public_key().as_ref();
                    let size = (point.len() - 1) / 2;
                    let crv = if size == 32 { "P-256" } else { "P-384" };
                    json!({
                        "kty": "EC", "crv": crv, "kid": kid,
                        "x": b64(&point[1..=size]), "y": b64(&point[1 + size..]),
                    })
                }
                Signer::Ed(pair) => json!({
                    "kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": b64(pair.public_key().as_ref()),
                }),
            }
        }

        fn keys(&self) -> Vec<VerifyingKey> {
            VerifyingKey::from_pem(&self.pem()).unwrap()
        }
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        let body = general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|chunk| std::str::from_utf8(chunk).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn b64json(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// Signs `claims` under `header` (whose `alg` picks the algorithm).
    fn token_with(signer: &Signer, header: Value, claims: Value) -> String {
        let alg = header["alg"].as_str().unwrap().parse::<Alg>().unwrap();
        let input = format!("{}.{}", b64json(&header), b64json(&claims));
        let signature = signer.sign(alg, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn token(signer: &Signer, alg: Alg) -> String {
        token_with(
            signer,
            json!({"alg": alg.name(), "typ": "JWT"}),
            json!({"sub": "alice"}),
        )
    }

    /// A token of arbitrary header and payload JSON with a junk signature.
    fn unsigned(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    }

    #[test]
    fn every_algorithm_round_trips_through_pem_and_jwks() {
        let cases = [
            (
                rsa(0),
                vec![
                    Alg::Rs256,
                    Alg::Rs384,
                    Alg::Rs512,
                    Alg::Ps256,
                    Alg::Ps384,
                    Alg::Ps512,
                ],
            ),
            (p256(), vec![Alg::Es256]),
            (p384(), vec![Alg::Es384]),
            (ed25519(), vec![Alg::EdDsa]),
        ];
        for (signer, algs) in cases {
            let from_jwks =
                VerifyingKey::from_jwks(&json!({"keys": [signer.jwk("k1")]}).to_string()).unwrap();
            assert_eq!(from_jwks[0].kid(), Some("k1"));
            for alg in algs {
                let token = token(&signer, alg);
                for keys in [signer.keys(), from_jwks.clone()] {
                    let verified = verify(&token, &keys, &[]).unwrap();
                    assert_eq!(verified.header.alg, alg);
                    assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
                    assert_eq!(verified.claims["sub"], "alice");
                }
            }
        }
    }

    #[test]
    fn alg_none_is_refused_in_any_case() {
        let keys = rsa(0).keys();
        for none in ["none", "None", "NONE"] {
            let token = format!(
                "{}.{}.",
                b64json(&json!({"alg": none})),
                b64json(&json!({"sub": "mallory"}))
            );
            assert_eq!(verify(&token, &keys, &[]), Err(JwtError::AlgNone));
        }
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_refused() {
        // The attack: sign HS256 with the verifier's public key bytes, hoping
        // it uses the configured "key" as an HMAC secret.
        let signer = rsa(0);
        let keys = signer.keys();
        for secret in [signer.pem().into_bytes(), signer.spki_der()] {
            let input = format!(
                "{}.{}",
                b64json(&json!({"alg": "HS256"})),
                b64json(&json!({"sub": "mallory"}))
            );
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            assert_eq!(
                verify(&token, &keys, &[]),
                Err(JwtError::HmacAlg {
                    alg: "HS256".into()
                })
            );
        }
        assert!(matches!(
            "hs512".parse::<Alg>(),
            Err(JwtError::HmacAlg { .. })
        ));
    }

    #[test]
    fn wrong_key_fails_signature() {
        let token = token(&rsa(0), Alg::Rs256);
        assert_eq!(
            verify(&token, &rsa(1).keys(), &[]),
            Err(JwtError::BadSignature)
        );
        let token = token_with(&p256(), json!({"alg": "ES256"}), json!({}));
        assert_eq!(
            verify(&token, &p256().keys(), &[]),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let signer = ed25519();
        let token = token(&signer, Alg::EdDsa);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64json(&json!({"sub": "root"}));
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &signer.keys(), &[]),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn kid_selects_the_key_and_unknown_kid_is_refused() {
        let (a, b) = (rsa(0), rsa(1));
        let jwks = json!({"keys": [a.jwk("a"), b.jwk("b")]}).to_string();
        let keys = VerifyingKey::from_jwks(&jwks).unwrap();
        let signed_by_b =
            |kid: &str| token_with(&b, json!({"alg": "RS256", "kid": kid}), json!({}));

        let verified = verify(&signed_by_b("b"), &keys, &[]).unwrap();
        assert_eq!(verified.header.kid.as_deref(), Some("b"));
        // Naming key "a" means only "a" is tried, and it did not sign.
        assert_eq!(
            verify(&signed_by_b("a"), &keys, &[]),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            verify(&signed_by_b("c"), &keys, &[]),
            Err(JwtError::UnknownKid { kid: "c".into() })
        );
        // With no kids configured, a token's kid does not narrow the search.
        assert!(verify(&signed_by_b("c"), &b.keys(), &[]).is_ok());
        // With no kid in the token, every key is tried.
        let no_kid = token_with(&b, json!({"alg": "RS256"}), json!({}));
        assert!(verify(&no_kid, &keys, &[]).is_ok());
    }

    #[test]
    fn algorithm_must_fit_the_key_type() {
        let p256_signer = p256();
        let es256 = token_with(&p256_signer, json!({"alg": "ES256"}), json!({}));
        assert_eq!(
            verify(&es256, &p384().keys(), &[]),
            Err(JwtError::NoCompatibleKey { alg: Alg::Es256 })
        );
        assert_eq!(
            verify(&es256, &rsa(0).keys(), &[]),
            Err(JwtError::NoCompatibleKey { alg: Alg::Es256 })
        );
        let eddsa = token(&ed25519(), Alg::EdDsa);
        assert_eq!(
            verify(&eddsa, &p256_signer.keys(), &[]),
            Err(JwtError::NoCompatibleKey { alg: Alg::EdDsa })
        );
    }

    #[test]
    fn a_keys_own_alg_must_match_the_token() {
        let signer = rsa(0);
        let mut jwk = signer.jwk("k");
        jwk["alg"] = json!("RS384");
        let keys = VerifyingKey::from_jwks(&json!({"keys": [jwk]}).to_string()).unwrap();
        assert_eq!(
            verify(&token(&signer, Alg::Rs256), &keys, &[]),
            Err(JwtError::NoCompatibleKey { alg: Alg::Rs256 })
        );
        assert!(verify(&token(&signer, Alg::Rs384), &keys, &[]).is_ok());
    }

    #[test]
    fn allowed_algs_are_enforced() {
        let signer = rsa(0);
        let token = token(&signer, Alg::Ps256);
        assert_eq!(
            verify(&token, &signer.keys(), &[Alg::Rs256]),
            Err(JwtError::AlgNotAllowed { alg: Alg::Ps256 })
        );
        assert!(verify(&token, &signer.keys(), &[Alg::Rs256, Alg::Ps256]).is_ok());
    }

    #[test]
    fn crit_headers_are_refused() {
        let signer = ed25519();
        let token = token_with(
            &signer,
            json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1}),
            json!({}),
        );
        assert_eq!(
            verify(&token, &signer.keys(), &[]),
            Err(JwtError::CritHeader)
        );
    }

    #[test]
    fn header_shape_is_checked() {
        let keys = ed25519().keys();
        let check = |header: &str| verify(&unsigned(header, "{}"), &keys, &[]);
        assert_eq!(check("\"alg\""), Err(JwtError::HeaderNotObject));
        assert_eq!(check("{\"alg\":"), Err(JwtError::HeaderNotObject));
        assert_eq!(check("{}"), Err(JwtError::MissingAlg));
        assert_eq!(check("{\"alg\": 256}"), Err(JwtError::MissingAlg));
        assert_eq!(
            check("{\"alg\": \"ES512\"}"),
            Err(JwtError::UnsupportedAlg {
                alg: "ES512".into()
            })
        );
        assert_eq!(
            check("{\"alg\": \"rs256\"}"),
            Err(JwtError::UnsupportedAlg {
                alg: "rs256".into()
            })
        );
        assert_eq!(
            check("{\"alg\": \"EdDSA\", \"kid\": 1}"),
            Err(JwtError::HeaderFieldType { field: "kid" })
        );
    }

    #[test]
    fn claims_must_be_an_object() {
        let signer = ed25519();
        for claims in [json!([1, 2]), json!("sub"), json!(null)] {
            let token = token_with(&signer, json!({"alg": "EdDSA"}), claims);
            assert_eq!(
                verify(&token, &signer.keys(), &[]),
                Err(JwtError::ClaimsNotObject)
            );
        }
    }

    #[test]
    fn segments_and_encoding_are_strict() {
        let signer = ed25519();
        let keys = signer.keys();
        let good = token(&signer, Alg::EdDsa);
        assert!(verify(&good, &keys, &[]).is_ok());

        // A valid token with a fourth segment is still not three segments.
        for extra in [
            format!("{good}."),
            format!("{good}.x"),
            format!("{good}.{good}"),
        ] {
            assert_eq!(verify(&extra, &keys, &[]), Err(JwtError::Malformed));
        }
        for bad in ["", ".", "..", "a.b", "a.b.c.d", &format!(".{good}")] {
            let result = verify(bad, &keys, &[]);
            assert!(
                matches!(
                    result,
                    Err(JwtError::Malformed | JwtError::Base64 { .. } | JwtError::HeaderNotObject)
                ),
                "{bad:?}: {result:?}"
            );
        }
        // Padding, the standard alphabet and whitespace are all refused.
        let parts: Vec<&str> = good.split('.').collect();
        let padded_header = general_purpose::URL_SAFE.encode(br#"{"alg": "EdDSA"}"#);
        assert!(padded_header.ends_with('='));
        assert_eq!(
            verify(
                &format!("{padded_header}.{}.{}", parts[1], parts[2]),
                &keys,
                &[]
            ),
            Err(JwtError::Base64 {
                segment: Segment::Header
            })
        );
        assert_eq!(
            verify(
                &format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
                &keys,
                &[]
            ),
            Err(JwtError::Base64 {
                segment: Segment::Signature
            })
        );
        assert_eq!(
            verify(
                &format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
                &keys,
                &[]
            ),
            Err(JwtError::BadSignature),
            "the signature covers the payload as sent"
        );
        assert_eq!(
            verify(&format!(" {good}"), &keys, &[]),
            Err(JwtError::Base64 {
                segment: Segment::Header
            })
        );
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let keys = ed25519().keys();
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&huge, &keys, &[]), Err(JwtError::TooLarge));
    }

    #[test]
    fn truncated_and_garbage_input_never_panics_or_passes() {
        let signer = p256();
        let keys = signer.keys();
        let good = token(&signer, Alg::Es256);
        for end in 0..good.len() {
            assert!(verify(&good[..end], &keys, &[]).is_err(), "prefix {end}");
        }
        // Flip each character of a valid token: nothing may verify.
        for at in 0..good.len() {
            let mut bytes = good.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let mutated = String::from_utf8(bytes).unwrap();
            assert!(verify(&mutated, &keys, &[]).is_err(), "flip {at}");
        }
        // Deterministic pseudo-random junk over the token alphabet and beyond.
        let alphabet: Vec<char> = "ab-_.=+/{}\"é\u{0}eyJ".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            let mut junk = String::new();
            for _ in 0..(state % 80) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                junk.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            assert!(verify(&junk, &keys, &[]).is_err());
        }
    }

    #[test]
    fn errors_do_not_echo_long_client_input() {
        let keys = ed25519().keys();
        let long_alg = "X".repeat(1_000);
        let err = verify(
            &unsigned(&json!({"alg": long_alg}).to_string(), "{}"),
            &keys,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.len() < 120, "{err}");
    }

    #[test]
    fn pem_accepts_several_blocks_and_certificates() {
        let (a, b) = (rsa(0), ed25519());
        let keys = VerifyingKey::from_pem(&format!("{}{}", a.pem(), b.pem())).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(verify(&token(&a, Alg::Rs256), &keys, &[]).is_ok());
        assert!(verify(&token(&b, Alg::EdDsa), &keys, &[]).is_ok());

        let c = p384();
        let cert = pem_block("CERTIFICATE", &test_certificate(&c.spki_der()));
        let keys = VerifyingKey::from_pem(&cert).unwrap();
        assert_eq!(keys[0].kind(), KeyKind::P384);
        assert!(verify(&token(&c, Alg::Es384), &keys, &[]).is_ok());
    }

    #[test]
    fn pem_refuses_private_keys_garbage_and_nothing() {
        let pkcs8 = Ed25519KeyPair::generate().unwrap().to_pkcs8().unwrap();
        assert_eq!(
            VerifyingKey::from_pem(&pem_block("PRIVATE KEY", pkcs8.as_ref())).unwrap_err(),
            KeyError::PemPrivateKey
        );
        assert_eq!(
            VerifyingKey::from_pem("hello").unwrap_err(),
            KeyError::NoPemKeys
        );
        assert_eq!(
            VerifyingKey::from_pem(&pem_block("PUBLIC KEY", b"not der")).unwrap_err(),
            KeyError::InvalidPemKey {
                index: 0,
                problem: KeyProblem::Spki
            }
        );
        assert_eq!(
            VerifyingKey::from_pem(&pem_block("CERTIFICATE", b"not der")).unwrap_err(),
            KeyError::InvalidPemKey {
                index: 0,
                problem: KeyProblem::Certificate
            }
        );
    }

    #[test]
    fn jwks_skips_foreign_keys_and_refuses_broken_ones() {
        let signer = p256();
        let good = signer.jwk("sig");
        let jwks = |keys: Value| VerifyingKey::from_jwks(&json!({ "keys": keys }).to_string());

        let mut encryption = good.clone();
        encryption["use"] = json!("enc");
        let mut wrap_only = good.clone();
        wrap_only["key_ops"] = json!(["wrapKey"]);
        let keys = jwks(json!([
            encryption,
            wrap_only,
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "x": "AA"},
            {"kty": "RSA", "alg": "RSA-OAEP", "n": "AA", "e": "AQAB"},
            good,
        ]))
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid(), Some("sig"));

        assert_eq!(
            jwks(json!([{"kty": "oct", "k": "c2VjcmV0"}])).unwrap_err(),
            KeyError::NoUsableJwk {
                skipped: 1,
                first: SkipReason::Kty("oct".into())
            }
        );
        assert_eq!(jwks(json!([])).unwrap_err(), KeyError::EmptyJwks);
        assert!(matches!(
            VerifyingKey::from_jwks("{\"keys\": 1}").unwrap_err(),
            KeyError::JwksJson { .. }
        ));

        let mut short_x = signer.jwk("k");
        short_x["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]));
        assert_eq!(
            jwks(json!([short_x])).unwrap_err(),
            KeyError::InvalidJwk {
                index: 0,
                problem: KeyProblem::CoordinateLength("x")
            }
        );
        let mut off_curve = signer.jwk("k");
        off_curve["y"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert_eq!(
            jwks(json!([off_curve])).unwrap_err(),
            KeyError::InvalidJwk {
                index: 0,
                problem: KeyProblem::Rejected
            }
        );
        let mut private = signer.jwk("k");
        private["d"] = json!("AAAA");
        assert_eq!(
            jwks(json!([private])).unwrap_err(),
            KeyError::JwkPrivateKey { index: 0 }
        );
        let mut mismatched = signer.jwk("k");
        mismatched["alg"] = json!("RS256");
        assert_eq!(
            jwks(json!([mismatched])).unwrap_err(),
            KeyError::InvalidJwk {
                index: 0,
                problem: KeyProblem::AlgMismatch(Alg::Rs256)
            }
        );
    }

    #[test]
    fn weak_rsa_keys_are_refused() {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let jwk = |n: &[u8], e: &[u8]| {
            json!({"keys": [{"kty": "RSA", "n": b64(n), "e": b64(e)}]}).to_string()
        };
        assert_eq!(
            VerifyingKey::from_jwks(&jwk(&[0xff; 128], &[1, 0, 1])).unwrap_err(),
            KeyError::InvalidJwk {
                index: 0,
                problem: KeyProblem::RsaSize
            }
        );
        assert_eq!(
            VerifyingKey::from_jwks(&jwk(&[0xff; 256], &[1])).unwrap_err(),
            KeyError::InvalidJwk {
                index: 0,
                problem: KeyProblem::RsaExponent
            }
        );
        // A leading zero octet does not count towards the size.
        let mut padded = vec![0u8];
        padded.extend_from_slice(&[0xff; 256]);
        assert!(VerifyingKey::from_jwks(&jwk(&padded, &[1, 0, 1])).is_ok());
    }

    /// A minimal X.509 v3 certificate around `spki` (RFC 5280 §4.1). Its
    /// signature is junk: the verifier only takes the key out of it.
    fn test_certificate(spki: &[u8]) -> Vec<u8> {
        fn der(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = content.len();
            if len < 0x80 {
                out.push(len as u8);
            } else if len < 0x100 {
                out.extend_from_slice(&[0x81, len as u8]);
            } else {
                out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
            }
            out.extend_from_slice(content);
            out
        }
        let seq = |parts: &[&[u8]]| der(0x30, &parts.concat());
        // ecdsa-with-SHA256, 1.2.840.10045.4.3.2
        let sig_alg = seq(&[&der(
            0x06,
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        )]);
        let name = seq(&[&der(
            0x31,
            &seq(&[&der(0x06, &[0x55, 0x04, 0x03]), &der(0x0c, b"test")]),
        )]);
        let validity = seq(&[&der(0x17, b"250101000000Z"), &der(0x17, b"350101000000Z")]);
        let tbs = seq(&[
            &der(0xa0, &der(0x02, &[2])),
            &der(0x02, &[1]),
            &sig_alg,
            &name,
            &validity,
            &name,
            spki,
        ]);
        seq(&[&tbs, &sig_alg, &der(0x03, &[0, 0])])
    }
}
