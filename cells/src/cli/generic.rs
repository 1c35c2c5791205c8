//! `sigil read|write|patch|list|delete PATH`: any path of the API, as
//! Vault's generic commands.

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::SecretOpts;
use super::input::{self, Stdin};
use super::outcome::{self, Failure, Outcome};
use super::output::{self, emit};

/// `read`/`delete PATH [key=value ...]`; the pairs become query parameters.
#[derive(Debug, Args)]
pub struct PathArgs {
    path: String,
    data: Vec<String>,
    #[command(flatten)]
    opts: SecretOpts,
}

/// `write`/`patch PATH key=value ...`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    path: String,
    data: Vec<String>,
    /// Write even with no data.
    #[arg(long, short = 'f')]
    force: bool,
    #[command(flatten)]
    opts: SecretOpts,
}

/// `list PATH`.
#[derive(Debug, Args)]
pub struct ListArgs {
    path: String,
    #[command(flatten)]
    opts: SecretOpts,
}

impl PathArgs {
    pub fn opts(&self) -> &SecretOpts {
        &self.opts
    }
}

/// Query-string characters left as they are (RFC 3986 unreserved).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if unreserved(b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `path?k=v&...` for `key=value` words (which take no `@file`/`-` here:
/// they are query parameters, as in `vault read`).
pub fn with_query(path: &str, words: &[String]) -> Result<String, String> {
    let trimmed = path.trim_matches('/');
    if words.is_empty() {
        return Ok(trimmed.to_owned());
    }
    let pairs = input::parse_pairs("query", words).map_err(|_| {
        let bad = words.iter().find(|w| !w.contains('=')).cloned();
        format!(
            "invalid key/value pair {:?}: format must be key=value",
            bad.unwrap_or_default()
        )
    })?;
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k),
                percent_encode(v.as_str().unwrap_or_default())
            )
        })
        .collect();
    Ok(format!("{trimmed}?{}", query.join("&")))
}

pub async fn read(a: PathArgs) -> Outcome {
    let path = with_query(&a.path, &a.data)?;
    let client = a.opts.client()?;
    let out = a.opts.output();
    match client.get(&path).await {
        Ok(Some(body)) => {
            emit(&out, &out.secret(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => outcome::absent(&a.path),
        Err(e) if outcome::is_not_found(&e) => outcome::absent(&a.path),
        Err(e) => Err(e.into()),
    }
}

pub async fn write(a: WriteArgs, stdin: &mut Stdin<'_>, patch: bool) -> Outcome {
    let data = input::parse_data(&a.data, stdin)?;
    if data.is_empty() && !a.force {
        return Err(Failure::Invalid("must supply data or use -force".into()));
    }
    let path = a.path.trim_matches('/');
    let client = a.opts.client()?;
    let out = a.opts.output();
    let body = Value::Object(data);
    let answer = if patch {
        client.patch(path, &body).await?
    } else {
        client.put(path, &body).await?
    };
    match answer {
        Some(answer) => emit(&out, &out.secret(&answer)?),
        None if out.format == super::Format::Table => {
            output::print(&format!("Success! Data written to: {path}"));
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(a: ListArgs) -> Outcome {
    let path = a.path.trim_matches('/');
    let client = a.opts.client()?;
    match client.list(path).await {
        Ok(Some(body))
            if body.get("wrap_info").is_some_and(|w| !w.is_null()) || a.opts.field.is_some() =>
        {
            let out = a.opts.output();
            emit(&out, &out.secret(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(body)) if body.pointer("/data/keys").is_some() => {
            output::print(&output::list(&body, a.opts.client.format));
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => outcome::absent(path),
        Err(e) if outcome::is_not_found(&e) => outcome::absent(path),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(a: PathArgs) -> Outcome {
    let path = with_query(&a.path, &a.data)?;
    let client = a.opts.client()?;
    let answer = client.delete(&path).await?;
    let out = a.opts.output();
    match answer {
        Some(answer) => emit(&out, &out.secret(&answer)?),
        None if out.format == super::Format::Table => output::print(&format!(
            "Success! Data deleted (if it existed) at: {}",
            a.path.trim_matches('/')
        )),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn read_pairs_become_an_encoded_query() {
        assert_eq!(with_query("/secret/x/", &[]).expect("ok"), "secret/x");
        assert_eq!(
            with_query("pki/cert", &words(&["a=1", "b=x y&z"])).expect("ok"),
            "pki/cert?a=1&b=x%20y%26z"
        );
        assert_eq!(
            with_query("p", &words(&["oops"])).expect_err("bad"),
            "invalid key/value pair \"oops\": format must be key=value"
        );
    }
}
