//! `sigil-chaos restart`: how long a node holding a large state takes to
//! serve again after a crash (SIGKILL) — the measurement behind "a 1 GB
//! node is back within seconds", the opposite of a store that loads
//! everything into memory at start.
//!
//! A one-node cell is filled through the HTTP API with KV version 2 values
//! (64 KiB by default, so 1 GiB takes 16,384 writes), killed, restarted on
//! the same data, and timed to three points: the API answers (sealed), the
//! node is unsealed, and a read of a value written before the crash
//! succeeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::cell::{Cell, CellOptions};

#[derive(Debug, Clone)]
pub struct RestartConfig {
    pub sigil: PathBuf,
    pub dir: PathBuf,
    /// Bytes of values to write.
    pub size: u64,
    pub value_size: usize,
    pub writers: usize,
}

/// The figures `restart` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestartReport {
    pub values_written: u64,
    pub value_bytes: u64,
    pub fill_seconds: f64,
    pub data_dir_bytes: u64,
    pub api_up_ms: f64,
    pub unsealed_ms: f64,
    pub serving_ms: f64,
}

impl std::fmt::Display for RestartReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "filled {} values, {:.1} MiB of values, in {:.1}s; data dir {:.1} MiB",
            self.values_written,
            self.value_bytes as f64 / (1 << 20) as f64,
            self.fill_seconds,
            self.data_dir_bytes as f64 / (1 << 20) as f64
        )?;
        writeln!(f, "after SIGKILL and restart:")?;
        writeln!(f, "  API answering (sealed)   {:>9.1} ms", self.api_up_ms)?;
        writeln!(f, "  unsealed                 {:>9.1} ms", self.unsealed_ms)?;
        write!(f, "  first read served        {:>9.1} ms", self.serving_ms)
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else {
        return 0;
    };
    items
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

pub async fn run(config: &RestartConfig) -> Result<RestartReport, Error> {
    let mut cell = Cell::start(CellOptions {
        nodes: 1,
        sigil: config.sigil.clone(),
        dir: config.dir.clone(),
        snapshot_every: 20_000,
        max_staleness_ms: 250,
        cell_id: "chaos".into(),
    })
    .await?;
    let root = cell.root_token.clone();
    let count = config.size.div_ceil(config.value_size as u64).max(1);
    let url = cell.nodes[0].url();
    let client = cell.client().clone();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.writers)
        .map(|w| {
            let (next, client, url, root) =
                (next.clone(), client.clone(), url.clone(), root.clone());
            let size = config.value_size;
            tokio::spawn(async move {
                // Distinct, incompressible-looking text per value (the
                // barrier's ciphertext is incompressible anyway).
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= count {
                        return Ok::<(), Error>(());
                    }
                    let mut value = String::with_capacity(size);
                    while value.len() < size {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        value.push_str(&format!("{seed:016x}"));
                    }
                    value.truncate(size);
                    let resp = client
                        .put(format!("{url}/v1/secret/data/fill/{n}"))
                        .header("X-Vault-Token", &root)
                        .json(&json!({ "data": { "v": value } }))
                        .send()
                        .await
                        .map_err(|e| Error::Fixture(format!("fill write {n}: {e}")))?;
                    if !resp.status().is_success() {
                        return Err(Error::Fixture(format!("fill write {n}: {}", resp.status())));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| Error::Fixture(e.to_string()))??;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    let data_dir_bytes = dir_size(&cell.nodes[0].dir.join("data"));

    cell.kill(0);
    let t0 = Instant::now();
    cell.spawn(0)?;
    cell.wait_up(0).await?;
    let api_up = t0.elapsed();
    cell.unseal(0).await?;
    let unsealed = t0.elapsed();
    let probe = format!("secret/data/fill/{}", count / 2);
    loop {
        let (code, _) = cell
            .call(0, "GET", &probe, Some(&root), &Value::Null)
            .await?;
        if code == 200 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(Error::Fixture(format!(
                "{probe} not served after restart ({code})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let serving = t0.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(RestartReport {
        values_written: count,
        value_bytes: count * config.value_size as u64,
        fill_seconds,
        data_dir_bytes,
        api_up_ms: ms(api_up),
        unsealed_ms: ms(unsealed),
        serving_ms: ms(serving),
    })
}
