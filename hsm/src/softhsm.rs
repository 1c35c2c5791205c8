//! A SoftHSM2 token per test, and the re-exec dance that lets a test use it.
//!
//! SoftHSM2 finds its tokens through the file named by `SOFTHSM2_CONF`, read
//! once, in `C_Initialize`. A test cannot set that variable for itself
//! (`std::env::set_var` is unsafe in a threaded test harness, and unsafe code
//! is forbidden here), and a process can initialise the module only once. So
//! [`run_in_child`] creates a fresh token, then re-runs the current test
//! binary, filtered to the one test, with `SOFTHSM2_CONF` set in the child's
//! environment only; in the child it calls the test body with a
//! [`SoftHsmEnv`] describing the token.
//!
//! ```no_run
//! use sigil_hsm::{KeyKind, KeyLabel, KeyProvider, Pkcs11KeyProvider, softhsm};
//!
//! #[test]
//! fn generates_on_the_token() {
//!     softhsm::run_in_child("generates_on_the_token", |env| {
//!         let provider = Pkcs11KeyProvider::open(env.pkcs11_config()).expect("open");
//!         let label = KeyLabel::new("root").expect("label");
//!         provider.generate_key(&label, KeyKind::Aes256).expect("generate");
//!     });
//! }
//! ```
//!
//! Works under `cargo test` (many tests per process: each child is filtered
//! to its test) and `cargo nextest run` (one test per process already; the
//! child is one more).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Pkcs11Config, SecretBytes, SecretString};

/// Environment variable that overrides the SoftHSM2 module path.
pub const MODULE_ENV: &str = "SIGIL_PKCS11_MODULE";
/// Where Debian and Ubuntu's `softhsm2` package installs the module.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Read by SoftHSM2 in `C_Initialize`.
const CONF_ENV: &str = "SOFTHSM2_CONF";
/// Set in the child, so `run_in_child` knows to run the body instead of re-executing.
const CHILD_ENV: &str = "SIGIL_SOFTHSM_CHILD";
/// The test the child was started for; checked against the name it runs under.
const TEST_ENV: &str = "SIGIL_SOFTHSM_TEST";
const LABEL_ENV: &str = "SIGIL_SOFTHSM_TOKEN_LABEL";
const PIN_ENV: &str = "SIGIL_SOFTHSM_PIN";
/// Printed by the child after the body returns. Without it the parent could
/// not tell a passing child from one whose filter matched no test at all.
const PASSED_MARKER: &str = "sigil-softhsm-child passed: ";

const UTIL: &str = "softhsm2-util";
const TOKEN_LABEL: &str = "sigil-test";

/// A freshly initialised SoftHSM2 token in its own temporary directory,
/// deleted on drop.
#[derive(Debug)]
pub struct SoftHsm {
    env: SoftHsmEnv,
    // Dropped last: removes the configuration and the token files.
    _dir: tempfile::TempDir,
}

/// Everything needed to use a SoftHSM2 token: what a child process receives
/// from [`run_in_child`], and what a test passes to a server it spawns.
#[derive(Clone, Debug)]
pub struct SoftHsmEnv {
    conf_path: PathBuf,
    module_path: PathBuf,
    token_label: String,
    pin: SecretString,
}

impl SoftHsm {
    /// Writes a `softhsm2.conf` whose token directory is inside a new
    /// temporary directory and initialises a token labelled `sigil-test`
    /// there with random user and SO PINs.
    ///
    /// Fails with a message saying what to install when `softhsm2-util` or
    /// the module is missing.
    pub fn new() -> io::Result<Self> {
        let module_path = std::env::var_os(MODULE_ENV)
            .filter(|path| !path.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from);
        if !module_path.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "pkcs11 module {} not found: install softhsm2 (apt-get install softhsm2) or set {MODULE_ENV}",
                    module_path.display()
                ),
            ));
        }

        let dir = tempfile::Builder::new()
            .prefix("sigil-softhsm-")
            .tempdir()?;
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir(&token_dir)?;
        let conf_path = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf_path,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                token_dir.display()
            ),
        )?;

        let env = SoftHsmEnv {
            conf_path,
            module_path,
            token_label: TOKEN_LABEL.to_owned(),
            pin: SecretString::new(random_hex(8)),
        };
        let so_pin = SecretString::new(random_hex(8));
        // PINs on a command line are visible to other local users; acceptable
        // for a throwaway test token, never for a real one.
        env.util(
            "init token",
            [
                "--init-token",
                "--free",
                "--label",
                &env.token_label,
                "--pin",
                env.pin.expose(),
                "--so-pin",
                so_pin.expose(),
            ],
        )?;
        Ok(Self { env, _dir: dir })
    }

    /// The token's description, to hand to code that opens it.
    pub fn env(&self) -> &SoftHsmEnv {
        &self.env
    }

    /// See [`SoftHsmEnv::conf_path`].
    pub fn conf_path(&self) -> &Path {
        self.env.conf_path()
    }

    /// See [`SoftHsmEnv::module_path`].
    pub fn module_path(&self) -> &Path {
        self.env.module_path()
    }

    /// See [`SoftHsmEnv::token_label`].
    pub fn token_label(&self) -> &str {
        self.env.token_label()
    }

    /// See [`SoftHsmEnv::pin`].
    pub fn pin(&self) -> &SecretString {
        self.env.pin()
    }

    /// See [`SoftHsmEnv::pkcs11_config`].
    pub fn pkcs11_config(&self) -> Pkcs11Config {
        self.env.pkcs11_config()
    }

    /// See [`SoftHsmEnv::delete_token`].
    pub fn delete_token(&self) -> io::Result<()> {
        self.env.delete_token()
    }
}

impl SoftHsmEnv {
    /// The `softhsm2.conf` to put in `SOFTHSM2_CONF` for any process that
    /// opens the token.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// The SoftHSM2 PKCS#11 library: `$SIGIL_PKCS11_MODULE` if set, else
    /// [`DEFAULT_MODULE`].
    pub fn module_path(&self) -> &Path {
        &self.module_path
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The user PIN.
    pub fn pin(&self) -> &SecretString {
        &self.pin
    }

    /// A provider configuration for this token. Opening it only works in a
    /// process whose environment has `SOFTHSM2_CONF` = [`Self::conf_path`].
    pub fn pkcs11_config(&self) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module_path.clone(),
            token_label: self.token_label.clone(),
            pin: self.pin.clone(),
        }
    }

    /// Deletes the token and its keys (`softhsm2-util --delete-token`), as if
    /// the HSM had been wiped or unplugged.
    pub fn delete_token(&self) -> io::Result<()> {
        self.util(
            "delete token",
            ["--delete-token", "--token", &self.token_label],
        )
    }

    /// Runs `softhsm2-util` against this configuration. `SOFTHSM2_CONF` is set
    /// on the child command only; this process's environment is untouched.
    fn util<'a>(&self, what: &str, args: impl IntoIterator<Item = &'a str>) -> io::Result<()> {
        let output = Command::new(UTIL)
            .args(args)
            .env(CONF_ENV, &self.conf_path)
            .output()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        e.kind(),
                        format!("{UTIL} not found on PATH: install softhsm2 (apt-get install softhsm2) to run the pkcs11 tests"),
                    )
                } else {
                    io::Error::new(e.kind(), format!("cannot run {UTIL} to {what}: {e}"))
                }
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{UTIL} could not {what} ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// The description the parent passed down, in a child.
    fn from_child_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|e| format!("{name} is not set in the softhsm child process ({e})"))
        };
        Ok(Self {
            conf_path: var(CONF_ENV)?.into(),
            module_path: var(MODULE_ENV)?.into(),
            token_label: var(LABEL_ENV)?,
            pin: SecretString::new(var(PIN_ENV)?),
        })
    }

    fn to_child_env(&self) -> [(&'static str, &OsStr); 4] {
        [
            (CONF_ENV, self.conf_path.as_os_str()),
            (MODULE_ENV, self.module_path.as_os_str()),
            (LABEL_ENV, OsStr::new(&self.token_label)),
            (PIN_ENV, OsStr::new(self.pin.expose())),
        ]
    }
}

/// Runs `f` against a fresh SoftHSM2 token, in a child process whose
/// environment points SoftHSM2 at it.
///
/// `test_name` is the calling test's name as the test harness knows it: the
/// function name for a test at the root of an integration test file,
/// `module::name` below that. In the parent this creates the token, re-runs
/// the current test binary with `test_name --exact --nocapture
/// --test-threads=1 --include-ignored` and panics, with the child's output,
/// unless the child ran the test and it passed. In the child it calls `f`.
///
/// Panics (failing the test, never skipping it) when SoftHSM2 is not
/// installed.
pub fn run_in_child(test_name: &str, f: impl FnOnce(&SoftHsmEnv)) {
    if std::env::var_os(CHILD_ENV).is_some() {
        run_as_child(test_name, f);
    } else {
        run_as_parent(test_name);
    }
}

fn run_as_child(test_name: &str, f: impl FnOnce(&SoftHsmEnv)) {
    let expected = std::env::var(TEST_ENV).unwrap_or_default();
    assert_eq!(
        expected, test_name,
        "softhsm child was started for test {expected:?} but is running {test_name:?}"
    );
    let env = SoftHsmEnv::from_child_env().unwrap_or_else(|e| panic!("{e}"));
    f(&env);
    println!("{PASSED_MARKER}{test_name}");
}

fn run_as_parent(test_name: &str) {
    let fixture = SoftHsm::new()
        .unwrap_or_else(|e| panic!("cannot create a softhsm2 token for {test_name}: {e}"));
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot find the test binary to re-run: {e}"));
    let output = Command::new(&exe)
        // --include-ignored: an `#[ignore]`d test run on purpose must run in
        // the child too, rather than fail as "no test ran".
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .envs(fixture.env().to_child_env())
        .env(CHILD_ENV, "1")
        .env(TEST_ENV, test_name)
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run {} for {test_name}: {e}", exe.display()));
    let report = child_report(&output);
    assert!(
        output.status.success(),
        "softhsm child for {test_name} failed ({}){report}",
        output.status
    );
    let marker = format!("{PASSED_MARKER}{test_name}\n");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&marker),
        "softhsm child ran no test named {test_name:?}: pass the name the test harness uses{report}"
    );
    // Shown by the harness with --nocapture or when a later assertion fails.
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
}

fn child_report(output: &Output) -> String {
    let mut report = String::new();
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let _ = write!(
            report,
            "\n--- child {name} ---\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    report
}

fn random_hex(bytes: usize) -> String {
    SecretBytes::random(bytes)
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
