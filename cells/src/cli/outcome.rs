//! How a client command ends: its exit code and its one error line.
//!
//! 0 success; 1 error (bad input, found before anything is sent, or an error
//! from the server); 2 when the thing asked for is absent (a read or list
//! answering 404) or the node is sealed (503), as `vault read`/`vault status`.

use std::process::ExitCode;

use super::client::CallError;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad input, found before contacting the server.
    Invalid(String),
    /// The call failed: unreachable node or an error answer.
    Call(CallError),
}

impl From<String> for Failure {
    fn from(msg: String) -> Self {
        Failure::Invalid(msg)
    }
}

impl From<&str> for Failure {
    fn from(msg: &str) -> Self {
        Failure::Invalid(msg.to_owned())
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Failure::Call(e)
    }
}

impl Failure {
    /// The exit code: 2 for a sealed node, 1 otherwise.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Call(e) if e.status() == Some(503) => 2,
            _ => 1,
        }
    }

    /// The error line, without the `Error: ` prefix; always one line.
    pub fn message(&self) -> String {
        let msg = match self {
            Failure::Invalid(m) => m.clone(),
            Failure::Call(e) => e.to_string(),
        };
        msg.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

pub type Outcome = Result<ExitCode, Failure>;

/// Prints the error line of a failed command and picks its exit code.
pub fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(f) => {
            eprintln!("Error: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

/// Nothing at `path`: Vault's message on stderr, exit 2.
pub fn absent(path: &str) -> Outcome {
    eprintln!("No value found at {path}");
    Ok(ExitCode::from(2))
}

/// Whether a call failed with 404 (an empty read or list, or no route).
pub fn is_not_found(e: &CallError) -> bool {
    e.status() == Some(404)
}

#[cfg(test)]
mod tests {
    use super::super::client::HttpError;
    use super::*;
    use serde_json::json;

    fn http(status: u16, errors: serde_json::Value) -> Failure {
        Failure::Call(CallError::Http(HttpError {
            status,
            body: json!({ "errors": errors }),
        }))
    }

    #[test]
    fn sealed_nodes_exit_2_and_other_errors_1() {
        assert_eq!(http(503, json!(["Vault is sealed"])).code(), 2);
        assert_eq!(http(403, json!(["permission denied"])).code(), 1);
        assert_eq!(Failure::from("bad").code(), 1);
        assert_eq!(Failure::Call(CallError::Transport("down".into())).code(), 1);
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(
            http(400, json!(["1 error occurred:\n\t* bad thing", "other"])).message(),
            "1 error occurred: * bad thing; other (HTTP 400)"
        );
        assert_eq!(http(500, json!([])).message(), "server answered 500");
    }
}
