//! The PostgreSQL layer of the database secrets engine: creates, renews and
//! revokes the roles behind dynamic credentials, sets static roles'
//! passwords and rotates the engine's own root password.
//!
//! [`PostgresDb`] holds one connection configuration ([`PostgresConfig`])
//! and a small pool of connections; every operation is async, bounded in
//! time and returns a [`PostgresError`]. Nothing here stores state: the
//! engine above keeps leases and configuration, and rebuilds a
//! [`PostgresDb`] when the configuration changes.
//!
//! # Statement templates
//!
//! Operations run the role's statements with Vault's placeholders filled in:
//! `{{name}}` and `{{username}}` (the role name), `{{password}}` and
//! `{{expiration}}` (`YYYY-MM-DD HH:MM:SS+00`, UTC). Values are substituted
//! as text, so a template decides how they are quoted; Vault's templates
//! quote them (`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'`).
//! What makes that safe is the check on every value before substitution:
//! usernames match `^[A-Za-z0-9_.@-]{1,63}$` and passwords hold no `'`, `"`,
//! `\` or control character, so neither can end a quoted literal or
//! identifier. Statements this layer builds itself go through
//! [`quote_ident`] and [`quote_literal`] instead.
//!
//! Each entry of a statements list is sent whole in one simple-protocol
//! query, so an entry may hold several `;`-separated statements. PostgreSQL
//! splits them with its own lexer, which knows about quotes, dollar quotes
//! and comments; a client-side splitter (Vault's splits on every `;`) breaks
//! `DO $$ ... ; ... $$` blocks and would be one more parser to get right.
//! All entries of one operation run in one transaction, so a failure leaves
//! nothing behind. The price: a statement that cannot run in a transaction
//! block (`CREATE DATABASE`) cannot be used, as in Vault.
//!
//! # Secrets in errors
//!
//! Errors never carry statement text: for a user statement they name the
//! operation, the entry's index, the SQLSTATE and the server's message,
//! detail and hint. When the statement carried a password, every occurrence
//! of it in those is replaced by `[redacted]`, and a syntax error's
//! `at or near "..."` token is dropped, since with an unquoted placeholder it
//! can be a fragment of the password. The server's `CONTEXT` and internal
//! query are never used: they can quote the statement.
//!
//! PostgreSQL itself logs a failing statement (`log_min_error_statement`),
//! password included; that is the database operator's log, as in Vault.
//!
//! # TLS
//!
//! `sslmode` in the URL works as in libpq, over rustls with aws-lc-rs:
//!
//! | `sslmode` | encrypted | certificate checked | name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only with `sslrootcert` (then as `verify-ca`, like libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `prefer` and `require` without `sslrootcert` encrypt but accept any
//! certificate, so they protect against eavesdropping, not against an
//! active attacker; SCRAM channel binding (`tls-server-end-point`, which
//! this layer supplies) still keeps such an attacker from relaying the
//! password login. `sslrootcert` is a PEM file read when the [`PostgresDb`]
//! is built, or `system` for the platform's roots (also the default for the
//! `verify-*` modes without `sslrootcert`). Client certificates (`sslcert`,
//! `sslkey`) are not supported and are refused rather than ignored.
//!
//! # Pool
//!
//! At most `max_open_connections` connections are open at once (a
//! semaphore); idle ones wait in a list. A connection that saw any error, or
//! whose operation was cancelled or timed out, is closed rather than reused,
//! so a pooled connection is never left mid-transaction. Every connection
//! starts with `statement_timeout` set, and every operation as a whole is
//! bounded by [`PostgresConfig::operation_timeout`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sigil_hsm::SecretString;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tracing::{debug, instrument, warn};

use super::password::Picker;

/// Vault's default for `max_open_connections`.
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 4;
/// How long establishing one connection (TCP, TLS, login) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server-side `statement_timeout` of every pooled connection.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// PostgreSQL truncates identifiers to `NAMEDATALEN - 1` = 63 bytes; a
/// longer username would silently become a different role.
pub const MAX_USERNAME_LEN: usize = 63;
/// Tries of a creation or revocation that lost a race in the catalog.
const CONFLICT_ATTEMPTS: u32 = 3;
/// Users revoked together in one transaction by
/// [`PostgresDb::revoke_users`]. Measured on PostgreSQL 15 with users that
/// own nothing: 100 per transaction gave 3,700 users/s on one connection,
/// 250 gave 4,700/s; one per transaction gave 600/s.
pub const REVOKE_CHUNK: usize = 128;
/// Chunks of [`PostgresDb::revoke_users`] in flight at once. More
/// connections doing DDL at once contend on the catalog: 16 connections
/// revoking one user per transaction were slower than 4.
const REVOKE_PARALLEL: usize = 4;
/// How long a revocation waits for terminated sessions to go away.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);
/// `application_name` of pooled connections unless the URL sets one.
const APPLICATION_NAME: &str = "sigil";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// An error PostgreSQL reported, with any password already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, ...
    pub severity: String,
    /// The five-character SQLSTATE, e.g. `42710` (duplicate object).
    pub code: String,
    /// The primary message.
    pub message: String,
    /// The optional detail line.
    pub detail: Option<String>,
    /// The optional hint line.
    pub hint: Option<String>,
}

impl ServerError {
    /// Copies the parts of `db` that never quote the statement, removing
    /// `secret` from them when the statement carried it.
    fn from_db(db: &tokio_postgres::error::DbError, secret: Option<&str>) -> Self {
        let clean = |text: &str| match secret {
            Some(secret) => redact(text, secret),
            None => text.to_owned(),
        };
        let mut message = clean(db.message());
        if secret.is_some() && db.code() == &SqlState::SYNTAX_ERROR {
            message = drop_near_token(&message);
        }
        Self {
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message,
            detail: db.detail().map(clean),
            hint: db.hint().map(clean),
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Why a PostgreSQL operation failed. No variant ever holds a password or
/// the text of a statement a password was substituted into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The configuration is unusable; `key` names the setting.
    #[error("invalid postgresql configuration: {key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    /// A username that could break out of a statement template, or that
    /// PostgreSQL would truncate.
    #[error("invalid username {username:?}: {reason}")]
    InvalidUsername {
        username: String,
        reason: &'static str,
    },
    /// A password that could break out of a statement template.
    #[error("invalid password: {reason}")]
    InvalidPassword { reason: &'static str },
    /// A value for a statement contains a NUL byte, which PostgreSQL cannot
    /// take in query text.
    #[error("{what} contains a NUL byte")]
    NulByte { what: &'static str },
    /// The operation needs statements and the role has none.
    #[error("{operation}: no statements configured")]
    MissingStatements { operation: &'static str },
    /// `rotate_root` needs the root username and password in the
    /// configuration (not only in the URL), because it must be able to log
    /// in with the new password afterwards.
    #[error("rotate_root: username and password must be set in the configuration")]
    RootCredentialsMissing,
    /// A connection could not be established (refused, unreachable, TLS
    /// failure, login refused).
    #[error("connecting to postgresql failed: {reason}")]
    Connect { reason: String },
    /// An established connection failed mid-operation.
    #[error("{operation}: connection to postgresql failed: {reason}")]
    Connection {
        operation: &'static str,
        reason: String,
    },
    /// A statement this layer built failed.
    #[error("{operation}: {error}")]
    Database {
        operation: &'static str,
        error: Box<ServerError>,
    },
    /// Entry `statement` (zero-based) of the role's statements failed; the
    /// operation's transaction was rolled back.
    #[error("{operation}: statement {statement} failed: {error}")]
    Statement {
        operation: &'static str,
        statement: usize,
        error: Box<ServerError>,
    },
    /// The operation, connecting, or waiting for a pooled connection took
    /// longer than allowed.
    #[error("{operation}: timed out after {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

impl PostgresError {
    /// Whether the same call may succeed later unchanged: the network, the
    /// server's load or a concurrent transaction, not the input, was at
    /// fault. Revocation is idempotent, so retrying it is always safe.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Connection { .. } | Self::Timeout { .. } => true,
            Self::Database { error, .. } | Self::Statement { error, .. } => {
                // Class 08 connection, 40 transaction rollback (serialization,
                // deadlock), 53 insufficient resources, 57P01-03 shutdown.
                let code = error.code.as_str();
                ["08", "40", "53"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || matches!(code, "57P01" | "57P02" | "57P03")
            }
            _ => false,
        }
    }

    /// Whether a statement lost a race with a concurrent transaction: a
    /// serialization failure or deadlock (class 40), or PostgreSQL's
    /// "tuple concurrently updated" when two transactions change the same
    /// catalog row (two `GRANT`s on one table). The whole transaction was
    /// rolled back.
    pub fn is_concurrent_conflict(&self) -> bool {
        self.server_error().is_some_and(|e| {
            e.code.starts_with("40")
                || (e.code == "XX000" && e.message == "tuple concurrently updated")
        })
    }

    /// The server's error for a statement, if that is what failed.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Self::Database { error, .. } | Self::Statement { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

/// Maps a driver error during `operation` to [`PostgresError`], scrubbing
/// `secret` (the password the statement carried, if any).
fn classify(
    operation: &'static str,
    statement: Option<usize>,
    e: &tokio_postgres::Error,
    secret: Option<&str>,
) -> PostgresError {
    if let Some(db) = e.as_db_error() {
        let error = Box::new(ServerError::from_db(db, secret));
        return match statement {
            Some(statement) => PostgresError::Statement {
                operation,
                statement,
                error,
            },
            None => PostgresError::Database { operation, error },
        };
    }
    let reason = describe(e);
    PostgresError::Connection {
        operation,
        reason: match secret {
            Some(secret) => redact(&reason, secret),
            None => reason,
        },
    }
}

/// The driver error and its causes: `Display` of `tokio_postgres::Error`
/// alone says "error connecting to server" without saying why.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return ServerError::from_db(db, None).to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` with every occurrence of `secret` replaced by `[redacted]`.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "[redacted]")
}

/// A syntax error's message with the offending token removed: PostgreSQL
/// says `syntax error at or near "TOKEN"`, and TOKEN may be a piece of a
/// password substituted without quotes.
fn drop_near_token(message: &str) -> String {
    const NEAR: &str = " at or near ";
    match message.find(NEAR) {
        Some(at) => format!("{}{NEAR}[redacted]", &message[..at]),
        None => message.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Quoting, validation, templates
// ---------------------------------------------------------------------------

/// `ident` as a quoted SQL identifier: in double quotes, embedded double
/// quotes doubled (PostgreSQL manual, 4.1.1 "Identifiers and Key Words").
/// Refuses NUL, which no query text may contain.
pub fn quote_ident(ident: &str) -> Result<String, PostgresError> {
    if ident.contains('\0') {
        return Err(PostgresError::NulByte { what: "identifier" });
    }
    Ok(format!("\"{}\"", ident.replace('"', "\"\"")))
}

/// `value` as a SQL string literal: in single quotes, embedded single
/// quotes doubled (manual, 4.1.2.1). Like PostgreSQL's own `quote_literal`,
/// a value with a backslash becomes an `E'...'` literal with backslashes
/// doubled, so the result means the same whatever
/// `standard_conforming_strings` is set to. Refuses NUL.
pub fn quote_literal(value: &str) -> Result<String, PostgresError> {
    if value.contains('\0') {
        return Err(PostgresError::NulByte { what: "literal" });
    }
    let quoted = value.replace('\'', "''");
    let literal = if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    };
    // The value may be a password; do not leave the intermediate behind.
    wipe(quoted);
    Ok(literal)
}

/// Refuses usernames that could escape a template's quotes or that
/// PostgreSQL would truncate: only `[A-Za-z0-9_.@-]`, 1 to 63 bytes.
pub fn validate_username(username: &str) -> Result<(), PostgresError> {
    let fail = |reason| {
        Err(PostgresError::InvalidUsername {
            username: username.to_owned(),
            reason,
        })
    };
    if username.is_empty() {
        return fail("empty");
    }
    if username.len() > MAX_USERNAME_LEN {
        return fail("longer than 63 bytes");
    }
    if !username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
    {
        return fail("only letters, digits, '_', '.', '@' and '-' are allowed");
    }
    Ok(())
}

/// Refuses passwords that could escape a template's quotes. The reason
/// never quotes the password.
pub fn validate_password(password: &str) -> Result<(), PostgresError> {
    let fail = |reason| Err(PostgresError::InvalidPassword { reason });
    if password.is_empty() {
        return fail("empty");
    }
    for c in password.chars() {
        match c {
            '\'' => return fail("contains a single quote"),
            '"' => return fail("contains a double quote"),
            '\\' => return fail("contains a backslash"),
            c if c.is_control() => return fail("contains a control character"),
            _ => {}
        }
    }
    Ok(())
}

/// `template` with each `{{key}}` of `vars` replaced by its value, in one
/// left-to-right pass: a substituted value is never scanned again, so a
/// password containing `{{name}}` stays as it is. Unknown placeholders are
/// left alone (PostgreSQL will then report the statement as invalid).
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let hit = after.find("}}").and_then(|end| {
            let key = &after[..end];
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v, end + 2))
        });
        match hit {
            Some((value, consumed)) => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Overwrites a string that held a password before freeing it; best
/// effort (the driver keeps its own copy in its write buffer).
fn wipe(s: String) {
    let mut bytes = s.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// An expiration as PostgreSQL's `timestamptz` input accepts it, in UTC:
/// `2030-01-02 03:04:05+00`.
pub fn format_expiration(expiration: OffsetDateTime) -> String {
    let t = expiration.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A username in Vault's PostgreSQL style:
/// `v-<display name, 8>-<role, 8>-<20 random>-<unix seconds>`, at most 63
/// bytes. Unlike Vault, the name is lowercased and characters other than
/// `a-z 0-9 - _` become `_`, so it needs no quoting to be used as written
/// and never differs from what PostgreSQL shows unquoted.
pub fn generate_username(
    display_name: &str,
    role: &str,
    now: OffsetDateTime,
) -> Result<String, PostgresError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    fn part(s: &str) -> String {
        s.chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(8)
            .collect()
    }
    let mut picker = Picker::system();
    let mut random = String::with_capacity(20);
    for _ in 0..20 {
        let i = picker
            .below(ALPHABET.len())
            .map_err(|_| PostgresError::Random)?;
        random.push(char::from(ALPHABET[i]));
    }
    let mut name = format!(
        "v-{}-{}-{random}-{}",
        part(display_name),
        part(role),
        now.unix_timestamp()
    );
    // Every character is ASCII, so any byte index is a char boundary.
    name.truncate(MAX_USERNAME_LEN);
    Ok(name)
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// How to reach the database and as whom.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://` or `postgresql://` URL. `{{username}}` and
    /// `{{password}}` are replaced by `username` and `password`,
    /// percent-encoded. `sslmode` and `sslrootcert` are read here (see the
    /// module docs); other query parameters go to the driver.
    pub connection_url: String,
    /// The root user. When set it overrides any user in the URL.
    pub username: String,
    /// The root user's password. When set it overrides any in the URL.
    pub password: SecretString,
    /// Pool size: at most this many connections at once.
    pub max_open_connections: usize,
    /// Limit for establishing one connection.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// Statements for [`PostgresDb::rotate_root`] with `{{username}}`
    /// (`{{name}}`) and `{{password}}`; empty for the built-in
    /// `ALTER ROLE CURRENT_USER WITH PASSWORD ...`.
    pub root_rotation_statements: Vec<String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            connection_url: String::new(),
            username: String::new(),
            password: SecretString::default(),
            max_open_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            root_rotation_statements: Vec::new(),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("connection_url", &redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("max_open_connections", &self.max_open_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("root_rotation_statements", &self.root_rotation_statements)
            .finish()
    }
}

impl PostgresConfig {
    /// Checks every setting, including the URL's syntax and TLS options
    /// (reading `sslrootcert`).
    pub fn validate(&self) -> Result<(), PostgresError> {
        self.check_limits()?;
        Target::parse(&self.connection_url)?;
        Ok(())
    }

    fn check_limits(&self) -> Result<(), PostgresError> {
        let invalid = |key, reason: &str| {
            Err(PostgresError::InvalidConfig {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.connection_url.trim().is_empty() {
            return invalid("connection_url", "required");
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.max_open_connections) {
            return invalid("max_open_connections", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be positive");
        }
        if self.statement_timeout < Duration::from_millis(1) {
            return invalid("statement_timeout", "must be at least 1ms");
        }
        if self.username.contains('\0') || self.password.expose().contains('\0') {
            return invalid("username", "must not contain NUL");
        }
        Ok(())
    }

    /// The limit for a whole operation: getting a connection plus a few
    /// statements, each bounded by `statement_timeout` on the server. It
    /// only matters when the server or network stops answering.
    pub fn operation_timeout(&self) -> Duration {
        self.connect_timeout
            .saturating_add(self.statement_timeout.saturating_mul(4))
    }
}

/// The URL for logs and `Debug`: any literal password in it replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "[unparseable url]".to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_len = url[authority_start..]
        .find(['/', '?'])
        .unwrap_or(url.len() - authority_start);
    let authority = &url[authority_start..authority_start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    if &userinfo[colon + 1..] == "{{password}}" {
        return url.to_owned();
    }
    format!(
        "{}{}:[redacted]{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

/// The `sslmode` values of libpq that this layer implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, PostgresError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // `allow` means "plain first, TLS if refused": nobody wants
            // that for credentials, and the driver cannot do it.
            _ => {
                return Err(PostgresError::InvalidConfig {
                    key: "sslmode",
                    reason: format!(
                        "{value:?} is not one of disable, prefer, require, verify-ca, verify-full"
                    ),
                });
            }
        })
    }
}

/// Where to connect, parsed once from the URL.
struct Target {
    /// The URL without `sslmode`/`sslrootcert`. May hold a literal
    /// password: never logged, never put in an error.
    url: String,
    ssl_mode: SslMode,
    tls: MakeRustls,
}

/// Characters left as they are when a credential is put into the URL; the
/// driver percent-decodes userinfo, so encoding everything else is safe.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Target {
    fn parse(url: &str) -> Result<Self, PostgresError> {
        let invalid = |reason: &str| PostgresError::InvalidConfig {
            key: "connection_url",
            reason: reason.to_owned(),
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "must be a postgres:// or postgresql:// URL (key=value strings are not supported)",
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert: Option<String> = None;
        let mut kept: Vec<&str> = Vec::new();
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| invalid("a query parameter is not valid UTF-8"))?;
            match key {
                "sslmode" => ssl_mode = SslMode::parse(&value)?,
                "sslrootcert" => root_cert = Some(value.into_owned()),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                    return Err(PostgresError::InvalidConfig {
                        key: "connection_url",
                        reason: format!("{key} is not supported"),
                    });
                }
                _ => kept.push(pair),
            }
        }
        // libpq: "if a root CA file exists, the behavior of sslmode=require
        // will be the same as that of verify-ca".
        if ssl_mode == SslMode::Require && root_cert.is_some() {
            ssl_mode = SslMode::VerifyCa;
        }
        let tls = MakeRustls::new(ssl_mode, root_cert.as_deref())?;
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let target = Self { url, ssl_mode, tls };
        // Parse once now, with stand-in credentials, so a malformed URL is
        // reported when the configuration is written, not at first use.
        target.config("u", "p", DEFAULT_CONNECT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT)?;
        Ok(target)
    }

    /// The driver's configuration for one connection with these
    /// credentials.
    fn config(
        &self,
        username: &str,
        password: &str,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<tokio_postgres::Config, PostgresError> {
        let user_enc = utf8_percent_encode(username, USERINFO).to_string();
        let pass_enc = utf8_percent_encode(password, USERINFO).to_string();
        let url = render(
            &self.url,
            &[("username", &user_enc), ("password", &pass_enc)],
        );
        wipe(pass_enc);
        let parsed = url.parse::<tokio_postgres::Config>();
        wipe(url);
        // The driver's parse errors name the parameter, never its value.
        let mut config = parsed.map_err(|e| PostgresError::InvalidConfig {
            key: "connection_url",
            reason: describe(&e),
        })?;
        if !username.is_empty() {
            config.user(username);
        }
        if !password.is_empty() {
            config.password(password);
        }
        config.ssl_mode(match self.ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        // A startup option rather than a `SET` after connecting: no extra
        // round trip, and it cannot be lost to a `RESET ALL` in a template.
        let timeout = format!("-c statement_timeout={}", statement_timeout.as_millis());
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {timeout}"),
            _ => timeout,
        };
        config.options(options);
        Ok(config)
    }
}

// ---------------------------------------------------------------------------
// TLS: a small tokio-postgres adapter over tokio-rustls (aws-lc-rs)
// ---------------------------------------------------------------------------

/// Makes TLS connectors for the driver. `None` when `sslmode=disable`; the
/// driver never asks then.
#[derive(Clone)]
struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
}

impl MakeRustls {
    fn new(mode: SslMode, root_cert: Option<&str>) -> Result<Self, PostgresError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable => return Ok(Self { config: None }),
            SslMode::Prefer | SslMode::Require => Arc::new(WeakVerifier {
                roots: None,
                provider: provider.clone(),
            }),
            SslMode::VerifyCa => Arc::new(WeakVerifier {
                roots: Some(Arc::new(load_roots(root_cert)?)),
                provider: provider.clone(),
            }),
            SslMode::VerifyFull => rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(root_cert)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| PostgresError::InvalidConfig {
                key: "sslrootcert",
                reason: e.to_string(),
            })?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PostgresError::InvalidConfig {
                key: "sslmode",
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Some(Arc::new(config)),
        })
    }
}

/// The trust anchors: the PEM file `sslrootcert`, or the platform's roots
/// when it is absent or `system`.
fn load_roots(root_cert: Option<&str>) -> Result<RootCertStore, PostgresError> {
    let invalid = |reason: String| PostgresError::InvalidConfig {
        key: "sslrootcert",
        reason,
    };
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unparseable system certificate should not disable TLS.
                let _ = roots.add(cert);
            }
        }
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| invalid(format!("reading {path:?}: {e}")))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| invalid(format!("parsing {path:?}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("adding a certificate from {path:?}: {e}")))?;
            }
        }
    }
    if roots.is_empty() {
        return Err(invalid("no trusted certificates found".to_owned()));
    }
    Ok(roots)
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// The driver asks for a connector before it knows whether it will use
    /// it (also for `sslmode=disable` and Unix sockets, with an empty
    /// name), so problems are reported only if a handshake is attempted.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned()).ok(),
        })
    }
}

/// One TLS handshake for one host.
struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Option<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("tls is disabled (sslmode=disable)"))?;
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "host is not a valid tls server name",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS stream that can tell the driver its channel binding.
struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// `tls-server-end-point` (RFC 5929, section 4.1): a hash of the
    /// server's certificate, with the certificate's signature hash, but
    /// SHA-256 in place of MD5 and SHA-1. For other signature algorithms
    /// (Ed25519, RSA-PSS) RFC 5929 defines nothing and PostgreSQL refuses
    /// the binding, so none is offered and SCRAM runs without it.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(end_point_hash)
            .map(ChannelBinding::tls_server_end_point)
            .unwrap_or_else(ChannelBinding::none)
    }
}

fn end_point_hash(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let algorithm = match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
        // md5/sha1/sha256 with RSA; ecdsa with sha1/sha256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => &digest::SHA256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(algorithm, cert.as_ref()).as_ref().to_vec())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The verifiers of the modes that do not check the host name. Without
/// roots (`sslmode=prefer`/`require`) any certificate is accepted; with
/// roots (`sslmode=verify-ca`) the chain must lead to one of them. Either
/// way the handshake signatures are checked, so the session is bound to
/// the key in the certificate presented (what channel binding relies on).
#[derive(Debug)]
struct WeakVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for WeakVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// ---------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------

/// Idle connections plus a cap on open ones.
struct Pool {
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    /// Bumped by `rotate_root`: connections from an older generation logged
    /// in with the old password and are closed instead of reused.
    generation: AtomicU64,
}

struct Idle {
    client: Client,
    generation: u64,
}

/// A checked-out connection. Dropping it closes the connection; only
/// [`Conn::finish`] after a success puts it back.
struct Conn<'a> {
    client: Client,
    generation: u64,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    fn finish<T>(self, result: &Result<T, PostgresError>) {
        if result.is_ok()
            && !self.client.is_closed()
            && self.generation == self.pool.generation.load(Ordering::Acquire)
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Idle {
                    client: self.client,
                    generation: self.generation,
                });
        }
    }
}

// ---------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------

/// The statements of a database role, as Vault keeps them. Each entry may
/// hold several `;`-separated statements; empty entries are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statements {
    /// Create the user: `{{name}}`, `{{username}}`, `{{password}}`,
    /// `{{expiration}}`. Required.
    pub creation: Vec<String>,
    /// Remove the user: `{{name}}`, `{{username}}`. Empty for the built-in
    /// revocation ([`PostgresDb::revoke_user`]).
    pub revocation: Vec<String>,
    /// Run after a failed creation: `{{name}}`, `{{username}}`.
    pub rollback: Vec<String>,
    /// Extend the user: `{{name}}`, `{{username}}`, `{{expiration}}`.
    /// Empty for `ALTER ROLE .. VALID UNTIL ..`.
    pub renewal: Vec<String>,
    /// Set a static role's password: `{{name}}`, `{{username}}`,
    /// `{{password}}`. Empty for `ALTER ROLE .. WITH PASSWORD ..`.
    pub rotation: Vec<String>,
}

/// The entries worth running.
fn non_empty(statements: &[String]) -> Vec<&str> {
    statements
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One PostgreSQL database as the secrets engine sees it: a root
/// connection configuration, a small pool, and the credential operations.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct PostgresDb {
    target: Target,
    username: String,
    /// Replaced by `rotate_root`; read (briefly, never across an await)
    /// each time a connection is opened.
    password: RwLock<SecretString>,
    pool: Pool,
    max_open_connections: usize,
    connect_timeout: Duration,
    statement_timeout: Duration,
    operation_timeout: Duration,
    root_rotation_statements: Vec<String>,
}

impl fmt::Debug for PostgresDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDb")
            .field("url", &redact_url(&self.target.url))
            .field("ssl_mode", &self.target.ssl_mode)
            .field("username", &self.username)
            .field("max_open_connections", &self.max_open_connections)
            .finish_non_exhaustive()
    }
}

impl PostgresDb {
    /// Validates `config` and builds the client; connects lazily (call
    /// [`PostgresDb::verify`] to check the database now, as Vault's
    /// `verify_connection` does).
    pub fn new(config: PostgresConfig) -> Result<Self, PostgresError> {
        config.check_limits()?;
        let target = Target::parse(&config.connection_url)?;
        let operation_timeout = config.operation_timeout();
        Ok(Self {
            target,
            username: config.username,
            password: RwLock::new(config.password),
            pool: Pool {
                permits: Semaphore::new(config.max_open_connections),
                idle: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
            },
            max_open_connections: config.max_open_connections,
            connect_timeout: config.connect_timeout,
            statement_timeout: config.statement_timeout,
            operation_timeout,
            root_rotation_statements: config.root_rotation_statements,
        })
    }

    /// Connects (or reuses a connection) and runs `SELECT 1`.
    #[instrument(skip_all)]
    pub async fn verify(&self) -> Result<(), PostgresError> {
        const OP: &str = "verify";
        self.bounded(OP, async {
            let conn = self.checkout(OP).await?;
            let result = conn
                .client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| classify(OP, None, &e, None));
            conn.finish(&result);
            result
        })
        .await
    }

    /// Creates `username` with `password`, valid until `expiration`, by
    /// running `statements.creation` in one transaction. On failure the
    /// transaction is rolled back, then `statements.rollback` runs (in its
    /// own transaction, on a fresh connection; its failure is logged) and the
    /// creation error is returned.
    #[instrument(skip_all, fields(username = %username))]
    pub async fn create_user(
        &self,
        statements: &Statements,
        username: &str,
        password: &SecretString,
        expiration: OffsetDateTime,
    ) -> Result<(), PostgresError> {
        const OP: &str = "create_user";
        validate_username(username)?;
        validate_password(password.expose())?;
        let creation = non_empty(&statements.creation);
        if creation.is_empty() {
            return Err(PostgresError::MissingStatements { operation: OP });
        }
        let expiration = format_expiration(expiration);
        let vars = [
            ("name", username),
            ("username", username),
            ("password", password.expose()),
            ("expiration", expiration.as_str()),
        ];
        self.bounded(OP, async {
            let mut attempt = 1;
            loop {
                let mut conn = self.checkout(OP).await?;
                let result = run_in_transaction(
                    &mut conn.client,
                    OP,
                    &creation,
                    &vars,
                    Some(password.expose()),
                )
                .await;
                conn.finish(&result);
                match result {
                    // Concurrent creations granting on the same objects can
                    // collide in the catalog; the transaction rolled back
                    // whole, so trying again is safe.
                    Err(e) if e.is_concurrent_conflict() && attempt < CONFLICT_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        self.run_rollback(statements, username).await;
                        return Err(e);
                    }
                    Ok(()) => return Ok(()),
                }
            }
        })
        .await
    }

    async fn run_rollback(&self, statements: &Statements, username: &str) {
        const OP: &str = "create_user rollback";
        let rollback = non_empty(&statements.rollback);
        if rollback.is_empty() {
            return;
        }
        let vars = [("name", username), ("username", username)];
        let result = async {
            let mut conn = self.checkout(OP).await?;
            let result = run_in_transaction(&mut conn.client, OP, &rollback, &vars, None).await;
            conn.finish(&result);
            result
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, "rollback statements failed after a failed creation");
        }
    }

    /// Removes `username`. With `statements.revocation` empty, the built-in
    /// revocation makes the credential stop working at once:
    ///
    /// 1. `ALTER ROLE .. NOLOGIN`: no new sessions;
    /// 2. terminate its sessions and wait (up to 5 s) for them to end;
    /// 3. in one transaction, `REASSIGN OWNED BY .. TO CURRENT_USER` and
    ///    `DROP OWNED BY ..` (its objects go to the root user, its
    ///    privileges in this database and on shared objects are revoked),
    ///    then `DROP ROLE IF EXISTS ..`;
    /// 4. terminate again, for a session that raced with step 2.
    ///
    /// A root user that is not a superuser cannot terminate other roles'
    /// sessions (a warning is logged and revocation goes on) and may lack
    /// the membership `REASSIGN`/`DROP OWNED` need; then step 3 revokes the
    /// role's privileges object by object from the catalog instead (Vault's
    /// default revokes schema-wide). A role that still owns objects or holds
    /// privileges in another database cannot be dropped from this one: the
    /// error is returned, but steps 1–2 already took effect.
    ///
    /// Idempotent: a missing role is success, so a retry after a partial
    /// failure finishes the job. Custom revocation statements run as given,
    /// in one transaction.
    #[instrument(skip_all, fields(username = %username))]
    pub async fn revoke_user(
        &self,
        statements: &Statements,
        username: &str,
    ) -> Result<(), PostgresError> {
        const OP: &str = "revoke_user";
        validate_username(username)?;
        let revocation = non_empty(&statements.revocation);
        let vars = [("name", username), ("username", username)];
        self.bounded(OP, async {
            let mut attempt = 1;
            loop {
                let mut conn = self.checkout(OP).await?;
                let result = if revocation.is_empty() {
                    revoke_default(&mut conn.client, &[username]).await
                } else {
                    run_in_transaction(&mut conn.client, OP, &revocation, &vars, None).await
                };
                conn.finish(&result);
                match result {
                    // Revocations revoking privileges on the same objects
                    // collide in the catalog like creations do; each
                    // transaction rolled back whole.
                    Err(e) if e.is_concurrent_conflict() && attempt < CONFLICT_ATTEMPTS => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                    }
                    result => return result,
                }
            }
        })
        .await
    }

    /// Removes many users, as [`revoke_user`](Self::revoke_user) would one
    /// by one, and answers for each in order. The built-in revocation takes
    /// them [`REVOKE_CHUNK`] at a time: one `NOLOGIN` batch, one session
    /// sweep, one transaction with `REASSIGN OWNED`, `DROP OWNED` and
    /// `DROP ROLE` naming them all. That is over ten times the rate of
    /// one user per transaction, because PostgreSQL's cost is per statement
    /// and per catalog invalidation far more than per role
    /// (`docs/benchmarks.md`). Up to [`REVOKE_PARALLEL`] chunks run at once,
    /// within `max_open_connections`.
    ///
    /// A chunk that fails is retried one user at a time, so one user that
    /// cannot be dropped (it owns objects in another database) fails alone.
    /// Custom revocation statements are per user, and run per user.
    pub async fn revoke_users(
        &self,
        statements: &Statements,
        usernames: &[&str],
    ) -> Vec<Result<(), PostgresError>> {
        let parallel = REVOKE_PARALLEL.min(self.max_open_connections).max(1);
        let mut results = Vec::with_capacity(usernames.len());
        if !non_empty(&statements.revocation).is_empty() {
            for wave in usernames.chunks(parallel) {
                let each = wave.iter().map(|u| self.revoke_user(statements, u));
                results.extend(futures::future::join_all(each).await);
            }
            return results;
        }
        for wave in usernames.chunks(REVOKE_CHUNK * parallel) {
            let chunks = wave
                .chunks(REVOKE_CHUNK)
                .map(|chunk| self.revoke_chunk(statements, chunk));
            for chunk in futures::future::join_all(chunks).await {
                results.extend(chunk);
            }
        }
        results
    }

    /// One chunk of [`revoke_users`](Self::revoke_users) with the built-in
    /// revocation.
    #[instrument(skip_all, fields(users = chunk.len()))]
    async fn revoke_chunk(
        &self,
        statements: &Statements,
        chunk: &[&str],
    ) -> Vec<Result<(), PostgresError>> {
        const OP: &str = "revoke_user";
        if chunk.len() > 1 && chunk.iter().all(|u| validate_username(u).is_ok()) {
            let together = self
                .bounded(OP, async {
                    let mut conn = self.checkout(OP).await?;
                    let result = revoke_default(&mut conn.client, chunk).await;
                    conn.finish(&result);
                    result
                })
                .await;
            match together {
                Ok(()) => return chunk.iter().map(|_| Ok(())).collect(),
                Err(e) => {
                    debug!(error = %e, "revoking a chunk together failed; one user at a time")
                }
            }
        }
        let mut results = Vec::with_capacity(chunk.len());
        for username in chunk {
            results.push(self.revoke_user(statements, username).await);
        }
        results
    }

    /// Extends `username` to `expiration`: `statements.renewal`, or
    /// `ALTER ROLE .. VALID UNTIL ..`.
    #[instrument(skip_all, fields(username = %username))]
    pub async fn renew_user(
        &self,
        statements: &Statements,
        username: &str,
        expiration: OffsetDateTime,
    ) -> Result<(), PostgresError> {
        const OP: &str = "renew_user";
        validate_username(username)?;
        let expiration = format_expiration(expiration);
        let default;
        let mut renewal = non_empty(&statements.renewal);
        if renewal.is_empty() {
            default = format!(
                "ALTER ROLE {} VALID UNTIL {}",
                quote_ident(username)?,
                quote_literal(&expiration)?
            );
            renewal.push(&default);
        }
        let vars = [
            ("name", username),
            ("username", username),
            ("expiration", expiration.as_str()),
        ];
        self.run_statements(OP, &renewal, &vars, None).await
    }

    /// Sets a static role's password: `statements.rotation`, or
    /// `ALTER ROLE .. WITH PASSWORD ..`.
    #[instrument(skip_all, fields(username = %username))]
    pub async fn set_password(
        &self,
        statements: &Statements,
        username: &str,
        password: &SecretString,
    ) -> Result<(), PostgresError> {
        const OP: &str = "set_password";
        validate_username(username)?;
        validate_password(password.expose())?;
        let custom = non_empty(&statements.rotation);
        let default = if custom.is_empty() {
            Some(format!(
                "ALTER ROLE {} WITH PASSWORD {}",
                quote_ident(username)?,
                quote_literal(password.expose())?
            ))
        } else {
            None
        };
        let rotation = match &default {
            Some(default) => vec![default.as_str()],
            None => custom,
        };
        let vars = [
            ("name", username),
            ("username", username),
            ("password", password.expose()),
        ];
        let result = self
            .run_statements(OP, &rotation, &vars, Some(password.expose()))
            .await;
        if let Some(default) = default {
            wipe(default);
        }
        result
    }

    /// Changes the root user's own password to `new_password` and makes
    /// this client use it: idle connections are closed so that the next
    /// operation logs in again with the new password (sessions already open
    /// are unaffected by a password change, in PostgreSQL as here).
    ///
    /// The caller must store `new_password` in the engine's configuration
    /// once this returns `Ok`; a [`PostgresDb`] rebuilt from the old
    /// configuration would use the old password. Operations that open a
    /// connection while the change is in flight may fail to log in and can
    /// be retried.
    #[instrument(skip_all)]
    pub async fn rotate_root(&self, new_password: &SecretString) -> Result<(), PostgresError> {
        const OP: &str = "rotate_root";
        let has_password = !self
            .password
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .expose()
            .is_empty();
        if self.username.is_empty() || !has_password {
            return Err(PostgresError::RootCredentialsMissing);
        }
        validate_password(new_password.expose())?;
        let custom = non_empty(&self.root_rotation_statements);
        let default = if custom.is_empty() {
            // CURRENT_USER rather than the name: right whatever the name
            // looks like, and it is the user we log in as.
            Some(format!(
                "ALTER ROLE CURRENT_USER WITH PASSWORD {}",
                quote_literal(new_password.expose())?
            ))
        } else {
            // The name goes into the templates as text.
            validate_username(&self.username)?;
            None
        };
        let rotation = match &default {
            Some(default) => vec![default.as_str()],
            None => custom,
        };
        let vars = [
            ("name", self.username.as_str()),
            ("username", self.username.as_str()),
            ("password", new_password.expose()),
        ];
        let result = self
            .run_statements(OP, &rotation, &vars, Some(new_password.expose()))
            .await;
        if let Some(default) = default {
            wipe(default);
        }
        result?;

        *self
            .password
            .write()
            .unwrap_or_else(PoisonError::into_inner) = new_password.clone();
        self.pool.generation.fetch_add(1, Ordering::AcqRel);
        let stale = std::mem::take(
            &mut *self
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        drop(stale);
        Ok(())
    }

    /// Runs `statements` in one transaction on a pooled connection.
    async fn run_statements(
        &self,
        operation: &'static str,
        statements: &[&str],
        vars: &[(&str, &str)],
        secret: Option<&str>,
    ) -> Result<(), PostgresError> {
        self.bounded(operation, async {
            let mut conn = self.checkout(operation).await?;
            let result =
                run_in_transaction(&mut conn.client, operation, statements, vars, secret).await;
            conn.finish(&result);
            result
        })
        .await
    }

    /// `fut`, or a timeout error after the operation limit. Cancelling drops
    /// any checked-out connection, which closes it.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T, PostgresError>>,
    ) -> Result<T, PostgresError> {
        tokio::time::timeout(self.operation_timeout, fut)
            .await
            .map_err(|_| PostgresError::Timeout {
                operation,
                timeout: self.operation_timeout,
            })?
    }

    /// A connection from the pool, or a new one.
    async fn checkout(&self, operation: &'static str) -> Result<Conn<'_>, PostgresError> {
        let permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| PostgresError::Connection {
                operation,
                reason: "connection pool closed".to_owned(),
            })?;
        let generation = self.pool.generation.load(Ordering::Acquire);
        let reused = {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(candidate) = idle.pop() {
                if candidate.generation == generation && !candidate.client.is_closed() {
                    found = Some(candidate.client);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(client) => client,
            None => self.connect().await?,
        };
        Ok(Conn {
            client,
            generation,
            pool: &self.pool,
            _permit: permit,
        })
    }

    /// A new connection whose driver task runs on the current runtime.
    async fn connect(&self) -> Result<Client, PostgresError> {
        let config = {
            let password = self.password.read().unwrap_or_else(PoisonError::into_inner);
            self.target.config(
                &self.username,
                password.expose(),
                self.connect_timeout,
                self.statement_timeout,
            )?
        };
        let connecting = config.connect(self.target.tls.clone());
        let (client, connection) = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| PostgresError::Timeout {
                operation: "connect",
                timeout: self.connect_timeout,
            })?
            .map_err(|e| PostgresError::Connect {
                reason: describe(&e),
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %describe(&e), "postgresql connection ended");
            }
        });
        Ok(client)
    }
}

/// Runs each entry of `statements`, rendered with `vars`, in one
/// transaction; rolls back on the first failure.
async fn run_in_transaction(
    client: &mut Client,
    operation: &'static str,
    statements: &[&str],
    vars: &[(&str, &str)],
    secret: Option<&str>,
) -> Result<(), PostgresError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| classify(operation, None, &e, secret))?;
    for (index, template) in statements.iter().enumerate() {
        let sql = render(template, vars);
        let result = tx.batch_execute(&sql).await;
        wipe(sql);
        if let Err(e) = result {
            let error = classify(operation, Some(index), &e, secret);
            // The connection is discarded after an error anyway; rolling
            // back explicitly just ends the transaction promptly.
            let _ = tx.rollback().await;
            return Err(error);
        }
    }
    tx.commit()
        .await
        .map_err(|e| classify(operation, None, &e, secret))
}

/// The built-in revocation of `usernames` (all valid), together; see
/// [`PostgresDb::revoke_user`]. Roles that do not exist are skipped. For
/// one user, a role dropped concurrently is success; for several, it fails
/// the whole (the caller goes on one user at a time).
async fn revoke_default(client: &mut Client, usernames: &[&str]) -> Result<(), PostgresError> {
    const OP: &str = "revoke_user";
    let db_err = |e: tokio_postgres::Error| classify(OP, None, &e, None);

    let rows = client
        .query(
            "SELECT rolname::text, oid FROM pg_catalog.pg_roles WHERE rolname = ANY($1)",
            &[&usernames],
        )
        .await
        .map_err(db_err)?;
    let mut roles = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0).map_err(db_err)?;
        let oid: u32 = row.try_get(1).map_err(db_err)?;
        roles.push((quote_ident(&name)?, oid));
    }
    if roles.is_empty() {
        debug!("roles do not exist; nothing to revoke");
        return Ok(());
    }
    let idents: Vec<&str> = roles.iter().map(|(ident, _)| ident.as_str()).collect();
    let oids: Vec<u32> = roles.iter().map(|(_, oid)| *oid).collect();
    let list = idents.join(", ");

    let nologin: String = idents
        .iter()
        .map(|ident| format!("ALTER ROLE {ident} NOLOGIN;"))
        .collect();
    match client.batch_execute(&nologin).await {
        Ok(()) => {}
        // Dropped by a concurrent revocation since we looked.
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) && roles.len() == 1 => {
            return Ok(());
        }
        Err(e) => return Err(db_err(e)),
    }
    terminate_sessions(client, &oids, true).await;

    let mut tx = client.transaction().await.map_err(db_err)?;
    let reassigned = {
        let savepoint = tx.savepoint("sigil_owned").await.map_err(db_err)?;
        match savepoint
            .batch_execute(&format!(
                "REASSIGN OWNED BY {list} TO CURRENT_USER; DROP OWNED BY {list}"
            ))
            .await
        {
            Ok(()) => {
                savepoint.commit().await.map_err(db_err)?;
                true
            }
            Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                savepoint.rollback().await.map_err(db_err)?;
                false
            }
            Err(e) => return Err(db_err(e)),
        }
    };
    if !reassigned {
        debug!("no privilege to reassign the roles' objects; revoking grants one by one");
        for (ident, oid) in &roles {
            revoke_grants(&mut tx, *oid, ident).await?;
        }
    }
    tx.batch_execute(&format!("DROP ROLE IF EXISTS {list}"))
        .await
        .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;

    terminate_sessions(client, &oids, false).await;
    Ok(())
}

/// The fallback for a root user without membership in the role (which
/// `REASSIGN`/`DROP OWNED` need): revoke, object by object, every privilege
/// the catalog shows granted to the role on tables, views, sequences,
/// functions, schemas and the current database. Vault revokes
/// `ON ALL TABLES IN SCHEMA ...` instead, which fails as a whole when the
/// schema holds a single table the root user may not grant on. Each
/// `REVOKE` runs in its own savepoint and may fail (granted by someone
/// else); the `DROP ROLE` that follows reports whatever is left (column
/// privileges, default privileges, other object kinds).
async fn revoke_grants(
    tx: &mut tokio_postgres::Transaction<'_>,
    oid: u32,
    ident: &str,
) -> Result<(), PostgresError> {
    const OP: &str = "revoke_user";
    const GRANTED: &str =
        "EXISTS (SELECT 1 FROM pg_catalog.aclexplode({acl}) a WHERE a.grantee = $1)";
    let granted = |acl: &str| GRANTED.replace("{acl}", acl);
    let query = format!(
        "SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, \
                n.nspname::text, c.relname::text \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S') AND {} \
         UNION ALL \
         SELECT 'FUNCTION', NULL, p.oid::pg_catalog.regprocedure::text \
           FROM pg_catalog.pg_proc p WHERE {} \
         UNION ALL \
         SELECT 'SCHEMA', NULL, n.nspname::text FROM pg_catalog.pg_namespace n WHERE {} \
         UNION ALL \
         SELECT 'DATABASE', NULL, d.datname::text FROM pg_catalog.pg_database d \
          WHERE d.datname = pg_catalog.current_database() AND {}",
        granted("c.relacl"),
        granted("p.proacl"),
        granted("n.nspacl"),
        granted("d.datacl"),
    );
    let db_err = |e: tokio_postgres::Error| classify(OP, None, &e, None);
    let rows = tx.query(&query, &[&oid]).await.map_err(db_err)?;
    let mut revokes = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: String = row.try_get(0).map_err(db_err)?;
        let schema: Option<String> = row.try_get(1).map_err(db_err)?;
        let name: String = row.try_get(2).map_err(db_err)?;
        let object = match (kind.as_str(), schema) {
            // `regprocedure` output is the server's own quoted
            // `schema.name(argtypes)`: the one name not quoted here.
            ("FUNCTION", _) => name,
            (_, Some(schema)) => format!("{}.{}", quote_ident(&schema)?, quote_ident(&name)?),
            (_, None) => quote_ident(&name)?,
        };
        revokes.push(format!(
            "REVOKE ALL PRIVILEGES ON {kind} {object} FROM {ident} CASCADE"
        ));
    }
    for revoke in revokes {
        let savepoint = tx.savepoint("sigil_revoke").await.map_err(db_err)?;
        match savepoint.batch_execute(&revoke).await {
            Ok(()) => savepoint.commit().await.map_err(db_err)?,
            Err(e) => {
                debug!(sqlstate = ?e.code().map(SqlState::code), "revoke skipped");
                savepoint.rollback().await.map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// Terminates the sessions of the roles `oids` other than ours; with `wait`,
/// waits until they are gone (termination is a signal, not a join), so the
/// credential's open sessions are dead when revocation returns. Failure is
/// logged, not returned: a root user that is not a superuser may not
/// signal other roles' backends, and the role is dropped regardless.
async fn terminate_sessions(client: &Client, oids: &[u32], wait: bool) {
    const OTHERS: &str = "FROM pg_catalog.pg_stat_activity \
                          WHERE usesysid = ANY($1) AND pid <> pg_catalog.pg_backend_pid()";
    let terminate = format!("SELECT pg_catalog.pg_terminate_backend(pid) {OTHERS}");
    if let Err(e) = client.query(&terminate, &[&oids]).await {
        warn!(
            sqlstate = ?e.code().map(SqlState::code),
            "could not terminate the role's sessions; they end at disconnect"
        );
        return;
    }
    if !wait {
        return;
    }
    let count = format!("SELECT count(*) {OTHERS}");
    let deadline = tokio::time::Instant::now() + TERMINATE_WAIT;
    loop {
        match client.query_one(&count, &[&oids]).await {
            Ok(row) if row.try_get::<_, i64>(0).is_ok_and(|n| n == 0) => return,
            Ok(_) => {}
            Err(_) => return,
        }
        if tokio::time::Instant::now() >= deadline {
            warn!("terminated sessions still present after waiting");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Instant;

    use tokio::sync::OnceCell;

    use super::*;
    use crate::engines::database::password::PasswordPolicy;
    use crate::testkit::postgres::PgServer;

    /// One server for every test in this module: starting one costs
    /// seconds. It has TLS on and also takes plain connections. Each test
    /// uses its own role and table names.
    static SERVER: OnceCell<PgServer> = OnceCell::const_new();

    async fn server() -> &'static PgServer {
        SERVER
            .get_or_init(|| async {
                match PgServer::start_tls().await {
                    Ok(server) => server,
                    Err(e) => panic!("starting postgresql: {e}"),
                }
            })
            .await
    }

    /// A name no other test uses.
    fn unique(prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    fn root_config(server: &PgServer, query: &str) -> PostgresConfig {
        PostgresConfig {
            connection_url: format!("{}{query}", server.connection_url_template()),
            username: server.superuser().to_owned(),
            password: SecretString::from(server.password()),
            ..PostgresConfig::default()
        }
    }

    async fn root_db(server: &PgServer) -> PostgresDb {
        PostgresDb::new(root_config(server, "?sslmode=disable")).unwrap()
    }

    async fn login(
        server: &PgServer,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = server.config();
        config.user(user).password(password);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn vault_creation() -> Statements {
        Statements {
            creation: vec![
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\n\
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
                    .to_owned(),
            ],
            ..Statements::default()
        }
    }

    fn in_an_hour() -> OffsetDateTime {
        OffsetDateTime::now_utc() + Duration::from_secs(3600)
    }

    async fn role_exists(admin: &Client, name: &str) -> bool {
        admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .unwrap()
            .is_some()
    }

    /// A test-only window into the pool: one scalar from a pooled connection.
    async fn scalar_bool(db: &PostgresDb, sql: &str) -> bool {
        let conn = db.checkout("test").await.unwrap();
        let row = conn.client.query_one(sql, &[]).await.unwrap();
        let value = row.get::<_, bool>(0);
        conn.finish(&Ok::<(), PostgresError>(()));
        value
    }

    // ---- pure helpers -----------------------------------------------------

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("plain").unwrap(), "\"plain\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\b'c").unwrap(), "E'a\\\\b''c'");
        assert!(matches!(
            quote_literal("a\0b"),
            Err(PostgresError::NulByte { .. })
        ));
        assert!(matches!(
            quote_ident("a\0b"),
            Err(PostgresError::NulByte { .. })
        ));
    }

    #[test]
    fn templates_render_in_one_pass() {
        let vars = [("name", "bob"), ("password", "{{name}}x")];
        assert_eq!(
            render(
                "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' {{other}} {{",
                &vars
            ),
            "CREATE ROLE \"bob\" PASSWORD '{{name}}x' {{other}} {{"
        );
    }

    #[test]
    fn username_and_password_rules() {
        for ok in [
            "v-token-role-abc-123",
            "a",
            "user@example.com",
            "A_b.c",
            &"x".repeat(63),
        ] {
            validate_username(ok).unwrap();
        }
        for bad in ["", "a\"b", "a'b", "a b", "a;b", "ä", &"x".repeat(64), "a\0"] {
            assert!(
                matches!(
                    validate_username(bad),
                    Err(PostgresError::InvalidUsername { .. })
                ),
                "{bad:?} accepted"
            );
        }
        validate_password("Abc-123-xyz").unwrap();
        for bad in ["", "a'b", "a\"b", "a\\b", "a\0b", "a\nb"] {
            let e = validate_password(bad).unwrap_err();
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn expiration_format() {
        let t = time::macros::datetime!(2030-01-02 03:04:05 +02:00);
        assert_eq!(format_expiration(t), "2030-01-02 01:04:05+00");
    }

    #[test]
    fn generated_usernames_look_like_vaults() {
        let now = time::macros::datetime!(2024-05-01 00:00:00 UTC);
        let name = generate_username("OIDC-Alice@Example", "Read Only Role", now).unwrap();
        let parts: Vec<&str> = name.splitn(5, '-').collect();
        assert_eq!(parts[0], "v");
        assert_eq!(parts[1], "oidc");
        // "Alice@Example" came after the first '-' of the display name.
        assert!(name.starts_with("v-oidc-ali-read_onl-"), "{name}");
        assert!(
            name.ends_with(&format!("-{}", now.unix_timestamp())),
            "{name}"
        );
        assert!(name.len() <= 63);
        validate_username(&name).unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
        let long = generate_username(&"d".repeat(100), &"r".repeat(100), now).unwrap();
        assert_eq!(long.len(), "v-".len() + 8 + 1 + 8 + 1 + 20 + 1 + 10);
        assert_ne!(
            generate_username("a", "b", now).unwrap(),
            generate_username("a", "b", now).unwrap()
        );
    }

    #[test]
    fn url_parsing_and_redaction() {
        let parse = |url: &str| Target::parse(url).map(|t| (t.url, t.ssl_mode));
        assert_eq!(
            parse("postgresql://{{username}}:{{password}}@db:5432/app").unwrap(),
            (
                "postgresql://{{username}}:{{password}}@db:5432/app".to_owned(),
                SslMode::Prefer
            )
        );
        assert_eq!(
            parse("postgres://u@db/app?application_name=x&sslmode=disable&connect_timeout=3")
                .unwrap(),
            (
                "postgres://u@db/app?application_name=x&connect_timeout=3".to_owned(),
                SslMode::Disable
            )
        );
        assert!(matches!(
            parse("postgres://u@db/app?sslmode=bogus"),
            Err(PostgresError::InvalidConfig { key: "sslmode", .. })
        ));
        assert!(matches!(
            parse("postgres://u@db/app?sslcert=/x"),
            Err(PostgresError::InvalidConfig { .. })
        ));
        assert!(matches!(
            parse("postgres://u@db/app?sslmode=verify-full&sslrootcert=/nonexistent"),
            Err(PostgresError::InvalidConfig {
                key: "sslrootcert",
                ..
            })
        ));
        assert!(matches!(
            parse("host=db user=u"),
            Err(PostgresError::InvalidConfig { .. })
        ));
        assert!(matches!(
            parse("postgres://u@db/app?nonsense=1"),
            Err(PostgresError::InvalidConfig { .. })
        ));

        // Credentials are percent-encoded into the placeholders and the
        // configured ones win over the URL's.
        let target = Target::parse("postgres://{{username}}:{{password}}@db/app").unwrap();
        let config = target
            .config(
                "me@corp",
                "p@ss:w/rd%",
                DEFAULT_CONNECT_TIMEOUT,
                DEFAULT_STATEMENT_TIMEOUT,
            )
            .unwrap();
        assert_eq!(config.get_user(), Some("me@corp"));
        assert_eq!(config.get_password(), Some(&b"p@ss:w/rd%"[..]));
        assert_eq!(config.get_options(), Some("-c statement_timeout=30000"));
        assert_eq!(config.get_application_name(), Some("sigil"));

        assert_eq!(
            redact_url("postgres://root:hunter2@db/app"),
            "postgres://root:[redacted]@db/app"
        );
        let config = PostgresConfig {
            connection_url: "postgres://root:hunter2@db/app".into(),
            password: SecretString::from("hunter3"),
            ..PostgresConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
    }

    #[test]
    fn channel_binding_hashes_the_certificate() {
        // rcgen's default key is ECDSA P-256 with SHA-256: RFC 5929 says
        // SHA-256 of the whole certificate.
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let der = cert.cert.der();
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        assert_eq!(end_point_hash(der).unwrap(), expected.as_ref());
    }

    #[test]
    fn syntax_error_tokens_are_dropped() {
        assert_eq!(
            drop_near_token("syntax error at or near \"abc\""),
            "syntax error at or near [redacted]"
        );
        assert_eq!(redact("x pw y pw", "pw"), "x [redacted] y [redacted]");
    }

    // ---- against PostgreSQL ----------------------------------------------

    #[tokio::test]
    async fn create_user_with_vault_statements_can_query() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let table = unique("inventory");
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (item text); INSERT INTO {table} VALUES ('widget')"
            ))
            .await
            .unwrap();

        let db = root_db(server).await;
        db.verify().await.unwrap();
        let user = unique("v-test-create");
        let password = PasswordPolicy::default().generate().unwrap();
        let mut statements = vault_creation();
        // A dollar-quoted block with semicolons inside, in its own entry.
        statements.creation.push(
            "DO $$ BEGIN PERFORM 1; PERFORM 2; END $$; COMMENT ON ROLE \"{{name}}\" IS 'x;y';"
                .into(),
        );
        db.create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap();

        let client = login(server, &user, password.expose()).await.unwrap();
        let row = client
            .query_one(&format!("SELECT item FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "widget");

        let valid: bool = admin
            .query_one(
                "SELECT rolvaliduntil BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' \
                 FROM pg_roles WHERE rolname = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert!(valid, "VALID UNTIL not set from {{{{expiration}}}}");

        // Creating the same user again fails with PostgreSQL's reason.
        let err = db
            .create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap_err();
        assert_eq!(err.server_error().unwrap().code, "42710", "{err}");
    }

    #[tokio::test]
    async fn revoke_kills_sessions_and_logins_and_is_idempotent() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let table = unique("secrets");
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (v int); INSERT INTO {table} VALUES (1)"
            ))
            .await
            .unwrap();
        let db = root_db(server).await;
        let user = unique("v-test-revoke");
        let password = PasswordPolicy::default().generate().unwrap();
        let mut statements = vault_creation();
        // The role will own a table too, which `DROP ROLE` alone refuses.
        statements
            .creation
            .push("GRANT CREATE ON SCHEMA public TO \"{{name}}\"".into());
        db.create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap();

        let session = login(server, &user, password.expose()).await.unwrap();
        let owned = unique("owned_by_user");
        session
            .batch_execute(&format!("CREATE TABLE {owned} (x int)"))
            .await
            .unwrap();
        session
            .query_one(&format!("SELECT v FROM {table}"), &[])
            .await
            .unwrap();

        db.revoke_user(&Statements::default(), &user).await.unwrap();

        assert!(
            session.query_one("SELECT 1", &[]).await.is_err(),
            "the open session survived revocation"
        );
        assert!(
            login(server, &user, password.expose()).await.is_err(),
            "login still works"
        );
        assert!(!role_exists(&admin, &user).await);
        let owner: String = admin
            .query_one(
                "SELECT tableowner::text FROM pg_tables WHERE tablename = $1",
                &[&owned],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, server.superuser(), "objects were not reassigned");

        // Again, and for a user that never existed: both succeed.
        db.revoke_user(&Statements::default(), &user).await.unwrap();
        db.revoke_user(&Statements::default(), "never-existed")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn users_are_revoked_together_and_one_that_cannot_be_dropped_fails_alone() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let db = root_db(server).await;
        let mut users = Vec::new();
        let mut passwords = Vec::new();
        for _ in 0..5 {
            let (user, password) = new_user(&db).await;
            users.push(user);
            passwords.push(password);
        }
        let sessions = [
            login(server, &users[1], passwords[1].expose())
                .await
                .unwrap(),
            login(server, &users[3], passwords[3].expose())
                .await
                .unwrap(),
        ];
        // users[2] holds a privilege in another database, which no
        // statement run from this one can take away: DROP ROLE refuses.
        let other = unique("otherdb");
        admin
            .batch_execute(&format!("CREATE DATABASE {other}"))
            .await
            .unwrap();
        let mut config = server.config();
        config.dbname(&other);
        let (other_client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        other_client
            .batch_execute(&format!(
                "CREATE TABLE pinned (x int); GRANT SELECT ON pinned TO \"{}\"",
                users[2]
            ))
            .await
            .unwrap();

        // Together, the transaction fails as a whole: nobody is dropped.
        let names: Vec<&str> = users.iter().map(String::as_str).collect();
        let mut conn = admin_conn(&db).await;
        assert!(revoke_default(&mut conn, &names).await.is_err());
        for user in &users {
            assert!(
                role_exists(&admin, user).await,
                "{user} dropped by a failed batch"
            );
        }

        // revoke_users goes on one at a time: only users[2] fails.
        let mut asked = names.clone();
        asked.push("never-existed");
        let results = db.revoke_users(&Statements::default(), &asked).await;
        assert_eq!(results.len(), asked.len());
        for (i, (user, result)) in asked.iter().zip(&results).enumerate() {
            if i == 2 {
                assert!(
                    result.is_err(),
                    "{user} could not be dropped, yet succeeded"
                );
                assert!(role_exists(&admin, user).await);
            } else {
                assert!(result.is_ok(), "{user}: {result:?}");
                assert!(!role_exists(&admin, user).await, "{user} survived");
            }
        }
        for session in &sessions {
            assert!(session.query_one("SELECT 1", &[]).await.is_err());
        }
        // Its logins are refused even though the role is still there.
        assert!(
            login(server, &users[2], passwords[2].expose())
                .await
                .is_err()
        );

        // Once the privilege is gone, many users go in one transaction.
        other_client
            .batch_execute("DROP TABLE pinned")
            .await
            .unwrap();
        let mut more = Vec::new();
        for _ in 0..3 {
            more.push(new_user(&db).await.0);
        }
        let mut names: Vec<&str> = more.iter().map(String::as_str).collect();
        names.push(&users[2]);
        names.push("never-existed");
        revoke_default(&mut conn, &names).await.unwrap();
        for user in names {
            assert!(!role_exists(&admin, user).await, "{user} survived");
        }
    }

    /// A new user made with Vault's creation statements, and its password.
    async fn new_user(db: &PostgresDb) -> (String, SecretString) {
        let user = unique("v-test-many");
        let password = PasswordPolicy::default().generate().unwrap();
        db.create_user(&vault_creation(), &user, &password, in_an_hour())
            .await
            .unwrap();
        (user, password)
    }

    /// A connection of `db`'s pool, for calling the statement layer directly.
    async fn admin_conn(db: &PostgresDb) -> Client {
        let conn = db.checkout("test").await.unwrap();
        conn.client
    }

    #[tokio::test]
    async fn custom_revocation_statements_run() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let db = root_db(server).await;
        let user = unique("v-test-custom-revoke");
        let password = PasswordPolicy::default().generate().unwrap();
        db.create_user(&vault_creation(), &user, &password, in_an_hour())
            .await
            .unwrap();
        let statements = Statements {
            revocation: vec![
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM \"{{name}}\"; DROP ROLE \"{{name}}\";".into(),
            ],
            ..Statements::default()
        };
        db.revoke_user(&statements, &user).await.unwrap();
        assert!(!role_exists(&admin, &user).await);
    }

    #[tokio::test]
    async fn revoke_works_for_a_non_superuser_root() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let root = unique("creatorole_root");
        let root_pw = "Root-pass-1";
        let table = unique("root_owned");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {root} LOGIN CREATEROLE PASSWORD '{root_pw}'; \
                 CREATE TABLE {table} (v int); ALTER TABLE {table} OWNER TO {root}"
            ))
            .await
            .unwrap();
        let db = PostgresDb::new(PostgresConfig {
            connection_url: server.connection_url_template(),
            username: root.clone(),
            password: SecretString::from(root_pw),
            ..PostgresConfig::default()
        })
        .unwrap();
        let user = unique("v-test-nonsuper");
        let password = PasswordPolicy::default().generate().unwrap();
        // Other tests' tables in `public` are not this root's to grant.
        let statements = Statements {
            creation: vec![format!(
                "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}'; \
                 GRANT SELECT ON {table} TO \"{{{{name}}}}\""
            )],
            ..Statements::default()
        };
        db.create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap();
        let session = login(server, &user, password.expose()).await.unwrap();
        session
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();

        db.revoke_user(&Statements::default(), &user).await.unwrap();
        assert!(!role_exists(&admin, &user).await);
        assert!(login(server, &user, password.expose()).await.is_err());
    }

    #[tokio::test]
    async fn failed_creation_leaves_nothing_and_runs_rollback() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let audit = unique("rollback_audit");
        admin
            .batch_execute(&format!("CREATE TABLE {audit} (name text)"))
            .await
            .unwrap();
        let db = root_db(server).await;
        let password = PasswordPolicy::default().generate().unwrap();

        // The second entry fails.
        let user = unique("v-test-halfway");
        let statements = Statements {
            creation: vec![
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'".into(),
                "GRANT SELECT ON no_such_table TO \"{{name}}\"".into(),
            ],
            rollback: vec![format!("INSERT INTO {audit} VALUES ('{{{{name}}}}')")],
            ..Statements::default()
        };
        let err = db
            .create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap_err();
        match &err {
            PostgresError::Statement {
                statement, error, ..
            } => {
                assert_eq!(*statement, 1);
                assert_eq!(error.code, "42P01");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(!role_exists(&admin, &user).await, "role left behind");
        let rows = admin
            .query(&format!("SELECT name FROM {audit}"), &[])
            .await
            .unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, vec![user.clone()], "rollback statements did not run");

        // The second statement of one entry fails: same outcome.
        let user = unique("v-test-halfway-entry");
        let statements = Statements {
            creation: vec![
                "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}'; SELECT 1/0;".into(),
            ],
            ..Statements::default()
        };
        let err = db
            .create_user(&statements, &user, &password, in_an_hour())
            .await
            .unwrap_err();
        assert_eq!(err.server_error().unwrap().code, "22012");
        assert!(!role_exists(&admin, &user).await);

        // No creation statements at all.
        assert!(matches!(
            db.create_user(&Statements::default(), &user, &password, in_an_hour())
                .await,
            Err(PostgresError::MissingStatements { .. })
        ));
    }

    #[tokio::test]
    async fn renew_changes_valid_until() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let db = root_db(server).await;
        let user = unique("v-test-renew");
        let password = PasswordPolicy::default().generate().unwrap();
        db.create_user(&vault_creation(), &user, &password, in_an_hour())
            .await
            .unwrap();

        let later = time::macros::datetime!(2099-03-04 05:06:07 UTC);
        db.renew_user(&Statements::default(), &user, later)
            .await
            .unwrap();
        let epoch: f64 = admin
            .query_one(
                "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(epoch as i64, later.unix_timestamp());

        // Custom renewal statements get {{expiration}} too.
        let custom = Statements {
            renewal: vec!["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}'".into()],
            ..Statements::default()
        };
        let sooner = time::macros::datetime!(2098-01-01 00:00:00 UTC);
        db.renew_user(&custom, &user, sooner).await.unwrap();
        let epoch: f64 = admin
            .query_one(
                "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(epoch as i64, sooner.unix_timestamp());

        // Renewing a role that does not exist is an error (not idempotent).
        assert!(
            db.renew_user(&Statements::default(), "v-none", later)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn set_password_switches_passwords() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let user = unique("static_role");
        admin
            .batch_execute(&format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD 'Initial-1'"
            ))
            .await
            .unwrap();
        let db = root_db(server).await;

        let first = PasswordPolicy::default().generate().unwrap();
        db.set_password(&Statements::default(), &user, &first)
            .await
            .unwrap();
        assert!(login(server, &user, "Initial-1").await.is_err());
        login(server, &user, first.expose()).await.unwrap();

        let second = PasswordPolicy::default().generate().unwrap();
        let custom = Statements {
            rotation: vec!["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'".into()],
            ..Statements::default()
        };
        db.set_password(&custom, &user, &second).await.unwrap();
        assert!(login(server, &user, first.expose()).await.is_err());
        login(server, &user, second.expose()).await.unwrap();
    }

    #[tokio::test]
    async fn rotate_root_changes_the_root_password() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let root = unique("rotating_root");
        admin
            .batch_execute(&format!(
                "CREATE ROLE {root} LOGIN SUPERUSER PASSWORD 'Old-root-1'"
            ))
            .await
            .unwrap();
        let db = PostgresDb::new(PostgresConfig {
            connection_url: server.connection_url_template(),
            username: root.clone(),
            password: SecretString::from("Old-root-1"),
            ..PostgresConfig::default()
        })
        .unwrap();
        db.verify().await.unwrap();

        let new = PasswordPolicy::default().generate().unwrap();
        db.rotate_root(&new).await.unwrap();
        assert!(login(server, &root, "Old-root-1").await.is_err());
        login(server, &root, new.expose()).await.unwrap();
        // The pool was emptied, so this logs in again, with the new password.
        assert_eq!(db.pool.idle.lock().unwrap().len(), 0);
        db.verify().await.unwrap();
        let user = unique("v-after-rotation");
        let password = PasswordPolicy::default().generate().unwrap();
        db.create_user(&vault_creation(), &user, &password, in_an_hour())
            .await
            .unwrap();

        // Without root credentials in the configuration there is nothing to rotate.
        let url_only = PostgresDb::new(PostgresConfig {
            connection_url: server.url(),
            ..PostgresConfig::default()
        })
        .unwrap();
        assert!(matches!(
            url_only.rotate_root(&new).await,
            Err(PostgresError::RootCredentialsMissing)
        ));
    }

    #[tokio::test]
    async fn unsafe_names_and_passwords_never_reach_postgres() {
        // A closed port: any attempt to talk to PostgreSQL would fail with a
        // connection error, so a validation error proves none was made.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = PostgresDb::new(PostgresConfig {
            connection_url: format!(
                "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres"
            ),
            username: "root".into(),
            password: SecretString::from("pw"),
            ..PostgresConfig::default()
        })
        .unwrap();
        let good = SecretString::from("Good-pass-1");
        let s = vault_creation();
        for name in ["bob\"; DROP ROLE postgres; --", "it's", "a b"] {
            assert!(matches!(
                db.create_user(&s, name, &good, in_an_hour()).await,
                Err(PostgresError::InvalidUsername { .. })
            ));
            assert!(matches!(
                db.revoke_user(&s, name).await,
                Err(PostgresError::InvalidUsername { .. })
            ));
            assert!(matches!(
                db.renew_user(&s, name, in_an_hour()).await,
                Err(PostgresError::InvalidUsername { .. })
            ));
            assert!(matches!(
                db.set_password(&s, name, &good).await,
                Err(PostgresError::InvalidUsername { .. })
            ));
        }
        for pw in ["x'; DROP ROLE postgres; --", "x\"y", "x\\y", "x\0y"] {
            let pw = SecretString::from(pw);
            let err = db
                .create_user(&s, "bob", &pw, in_an_hour())
                .await
                .unwrap_err();
            assert!(
                matches!(err, PostgresError::InvalidPassword { .. }),
                "{err:?}"
            );
            assert!(!err.to_string().contains(pw.expose()));
            assert!(matches!(
                db.set_password(&s, "bob", &pw).await,
                Err(PostgresError::InvalidPassword { .. })
            ));
            assert!(matches!(
                db.rotate_root(&pw).await,
                Err(PostgresError::InvalidPassword { .. })
            ));
        }
    }

    #[tokio::test]
    async fn errors_never_contain_the_password() {
        let server = server().await;
        let db = root_db(server).await;
        let password = SecretString::from("Xq7-Zk9-Wm3-Pv8");
        let fragments = ["Xq7", "Zk9", "Wm3", "Pv8"];
        let check = |err: &PostgresError| {
            for text in [err.to_string(), format!("{err:?}")] {
                for f in fragments {
                    assert!(!text.contains(f), "password fragment {f} in {text}");
                }
            }
        };

        // The message quotes the whole value.
        let statements = Statements {
            creation: vec!["SELECT '{{password}}'::int".into()],
            ..Statements::default()
        };
        let err = db
            .create_user(&statements, "v-redact", &password, in_an_hour())
            .await
            .unwrap_err();
        let server_error = err.server_error().unwrap();
        assert_eq!(server_error.code, "22P02");
        assert!(server_error.message.contains("[redacted]"), "{err}");
        check(&err);

        // Unquoted, the lexer splits the password and reports a fragment.
        let statements = Statements {
            creation: vec!["CREATE ROLE \"{{name}}\" LOGIN PASSWORD {{password}}".into()],
            ..Statements::default()
        };
        let err = db
            .create_user(&statements, "v-redact", &password, in_an_hour())
            .await
            .unwrap_err();
        assert_eq!(err.server_error().unwrap().code, "42601", "{err}");
        check(&err);

        // The detail line too.
        let statements = Statements {
            rotation: vec!["DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = '{{password}}', HINT = 'h {{password}}'; END $$".into()],
            ..Statements::default()
        };
        let err = db
            .set_password(&statements, "v-redact", &password)
            .await
            .unwrap_err();
        let server_error = err.server_error().unwrap();
        assert_eq!(server_error.detail.as_deref(), Some("[redacted]"));
        assert_eq!(server_error.hint.as_deref(), Some("h [redacted]"));
        check(&err);
    }

    #[tokio::test]
    async fn statement_timeout_applies() {
        let server = server().await;
        let mut config = root_config(server, "?sslmode=disable");
        config.statement_timeout = Duration::from_millis(200);
        let db = PostgresDb::new(config).unwrap();
        let statements = Statements {
            creation: vec!["SELECT pg_sleep(10)".into()],
            ..Statements::default()
        };
        let started = Instant::now();
        let err = db
            .create_user(
                &statements,
                "v-slow",
                &SecretString::from("Slow-1"),
                in_an_hour(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.server_error().unwrap().code, "57014", "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn catalog_races_count_as_concurrent_conflicts() {
        let err = |code: &str, message: &str| PostgresError::Statement {
            operation: "create_user",
            statement: 0,
            error: Box::new(ServerError {
                severity: "ERROR".into(),
                code: code.into(),
                message: message.into(),
                detail: None,
                hint: None,
            }),
        };
        assert!(err("XX000", "tuple concurrently updated").is_concurrent_conflict());
        assert!(err("40001", "could not serialize access").is_concurrent_conflict());
        assert!(err("40P01", "deadlock detected").is_concurrent_conflict());
        assert!(!err("XX000", "something else broke").is_concurrent_conflict());
        assert!(!err("42P01", "relation does not exist").is_concurrent_conflict());
        assert!(!PostgresError::Random.is_concurrent_conflict());
    }

    #[tokio::test]
    async fn unreachable_server_fails_fast_and_clearly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = PostgresDb::new(PostgresConfig {
            connection_url: format!("postgresql://root:secret-pw@127.0.0.1:{port}/postgres"),
            ..PostgresConfig::default()
        })
        .unwrap();
        let started = Instant::now();
        let err = db.verify().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(6));
        assert!(matches!(err, PostgresError::Connect { .. }), "{err:?}");
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("secret-pw"), "{text}");

        // A black-holed address takes the connect timeout, no longer.
        let mut config = PostgresConfig {
            connection_url: "postgresql://root:pw@10.255.255.1:5432/postgres".into(),
            ..PostgresConfig::default()
        };
        config.connect_timeout = Duration::from_secs(1);
        let db = PostgresDb::new(config).unwrap();
        let started = Instant::now();
        let err = db.verify().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        assert!(err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn pool_caps_open_connections() {
        let server = server().await;
        let admin = server.client().await.unwrap();
        let app = unique("pool_test");
        let mut config = root_config(server, &format!("?sslmode=disable&application_name={app}"));
        config.max_open_connections = 2;
        let db = Arc::new(PostgresDb::new(config).unwrap());
        let statements = Statements {
            creation: vec!["SELECT pg_sleep(0.05)".into()],
            ..Statements::default()
        };
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let db = db.clone();
                let statements = statements.clone();
                tokio::spawn(async move {
                    let pw = SecretString::from("Pool-pass-1");
                    db.create_user(&statements, &format!("v-pool-{i}"), &pw, in_an_hour())
                        .await
                })
            })
            .collect();
        let mut peak = 0i64;
        for task in tasks {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            peak = peak.max(n);
            task.await.unwrap().unwrap();
        }
        assert!(peak <= 2, "{peak} connections open");
        // Connections came back to the pool rather than being closed.
        assert_eq!(db.pool.idle.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn tls_modes() {
        let server = server().await;
        let ca = server.ca_path().unwrap().display().to_string();
        let port = server.port();
        let is_tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let db_for = |query: String| {
            PostgresDb::new(PostgresConfig {
                connection_url: format!("postgresql://{{{{username}}}}:{{{{password}}}}@{query}"),
                username: server.superuser().to_owned(),
                password: SecretString::from(server.password()),
                ..PostgresConfig::default()
            })
        };

        // verify-full against the right CA and name: encrypted.
        let db = db_for(format!(
            "localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
        ))
        .unwrap();
        db.verify().await.unwrap();
        assert!(scalar_bool(&db, is_tls).await);
        let db = db_for(format!(
            "127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
        ))
        .unwrap();
        assert!(scalar_bool(&db, is_tls).await);
        // Dynamic credentials over TLS.
        let user = unique("v-test-tls");
        let password = PasswordPolicy::default().generate().unwrap();
        db.create_user(&vault_creation(), &user, &password, in_an_hour())
            .await
            .unwrap();
        db.revoke_user(&Statements::default(), &user).await.unwrap();

        // The certificate does not name the host: verify-full refuses,
        // verify-ca accepts. (`hostaddr` connects to 127.0.0.1 while TLS
        // checks the name `db.invalid`.)
        let misnamed = format!("db.invalid:{port}/postgres?hostaddr=127.0.0.1&sslrootcert={ca}");
        let err = db_for(format!("{misnamed}&sslmode=verify-full"))
            .unwrap()
            .verify()
            .await
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        let db = db_for(format!("{misnamed}&sslmode=verify-ca")).unwrap();
        assert!(scalar_bool(&db, is_tls).await);

        // Another CA: every verifying mode refuses, require with a root
        // certificate included (it means verify-ca, as in libpq).
        let other = tempfile::NamedTempFile::new().unwrap();
        let other_ca = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
        std::fs::write(other.path(), other_ca.cert.pem()).unwrap();
        let other = other.path().display().to_string();
        for mode in ["verify-full", "verify-ca", "require"] {
            let db = db_for(format!(
                "localhost:{port}/postgres?sslmode={mode}&sslrootcert={other}"
            ))
            .unwrap();
            let err = db.verify().await.unwrap_err();
            assert!(
                matches!(err, PostgresError::Connect { .. }),
                "{mode}: {err:?}"
            );
        }

        // require without a root certificate and prefer: encrypted, unverified.
        for mode in ["require", "prefer"] {
            let db = db_for(format!("localhost:{port}/postgres?sslmode={mode}")).unwrap();
            assert!(scalar_bool(&db, is_tls).await, "{mode} did not use tls");
        }
        // disable: plain.
        let db = db_for(format!("localhost:{port}/postgres?sslmode=disable")).unwrap();
        assert!(!scalar_bool(&db, is_tls).await);
    }
}
