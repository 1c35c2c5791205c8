//! The `socket` device: lines over TCP to a log collector (docs/audit.md,
//! "The socket device").

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::device::Sink;

/// Connects on first use and again after any failure. Each line must be
/// handed to the kernel within `write_timeout` (connecting included), or the
/// write fails and the connection is dropped, since part of the line may
/// have gone out.
#[derive(Debug)]
pub struct SocketSink {
    address: String,
    write_timeout: Duration,
    stream: Option<TcpStream>,
}

impl SocketSink {
    pub fn new(address: String, write_timeout: Duration) -> Self {
        Self {
            address,
            write_timeout,
            stream: None,
        }
    }

    async fn write_by(&mut self, line: &[u8], deadline: Instant) -> io::Result<()> {
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "audit socket write timed out");
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => tokio::time::timeout_at(deadline, TcpStream::connect(&self.address))
                .await
                .map_err(|_| timed_out())??,
        };
        tokio::time::timeout_at(deadline, stream.write_all(line))
            .await
            .map_err(|_| timed_out())??;
        self.stream = Some(stream);
        Ok(())
    }
}

impl Sink for SocketSink {
    async fn write_line(&mut self, line: Vec<u8>) -> io::Result<()> {
        let deadline = Instant::now() + self.write_timeout;
        self.write_by(&line, deadline).await
    }

    async fn reopen(&mut self) -> io::Result<()> {
        self.stream = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn reconnects_after_the_peer_goes_away() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut sink = SocketSink::new(addr, Duration::from_secs(2));
        sink.write_line(b"one\n".to_vec()).await.expect("write");
        let (conn, _) = listener.accept().await.expect("accept");
        let mut lines = tokio::io::BufReader::new(conn).lines();
        assert_eq!(
            lines.next_line().await.expect("read").as_deref(),
            Some("one")
        );
        drop(lines);
        // Writes to a closed peer fail once the reset arrives.
        let mut failed = false;
        for _ in 0..50 {
            if sink.write_line(b"lost\n".to_vec()).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(failed, "a write to a closed peer never failed");
        sink.write_line(b"two\n".to_vec()).await.expect("write");
        let (conn, _) = listener.accept().await.expect("accept");
        let mut lines = tokio::io::BufReader::new(conn).lines();
        assert_eq!(
            lines.next_line().await.expect("read").as_deref(),
            Some("two")
        );
    }

    #[tokio::test]
    async fn nothing_listening_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let mut sink = SocketSink::new(addr, Duration::from_millis(500));
        assert!(sink.write_line(b"x\n".to_vec()).await.is_err());
    }
}
