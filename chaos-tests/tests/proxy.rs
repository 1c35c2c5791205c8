//! The fault-injecting proxy against real sockets on 127.0.0.1: an echo
//! server, and a "probe" upstream whose accepted sockets the test drives
//! itself to watch each direction separately. Timings are asserted only as
//! "at least the injected delay"; "nothing arrives" means nothing within a
//! short window, which a stalled connection never beats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sigil_chaos::proxy::{Direction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Upper bound for things that should happen at once.
const PROMPT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An echo server that counts the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = TcpListener::bind(loopback()).await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    // Ends when the client closes its side; then closes ours.
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Echo {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An upstream that hands every accepted socket to the test.
async fn probe() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<TcpStream>,
    JoinHandle<()>,
) {
    let listener = TcpListener::bind(loopback()).await.expect("bind probe");
    let addr = listener.local_addr().expect("probe address");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, rx, task)
}

async fn read_exact_within(stream: &mut TcpStream, n: usize, within: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0; n];
    match timeout(within, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        Ok(Err(e)) => panic!("read failed: {e}"),
        Err(_) => None,
    }
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.expect("write");
    read_exact_within(stream, message.len(), PROMPT)
        .await
        .expect("echo within the deadline")
}

/// Whether the peer closed or reset `stream` within `within` (any data that
/// still arrives first is read past).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn passes_bytes_through_both_ways() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    assert_eq!(proxy.upstream(), echo.addr);

    // More than one chunk, with a pattern that shows reordering or loss.
    let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut a = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    let mut b = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    let (got_a, got_b) = tokio::join!(round_trip(&mut a, &message), round_trip(&mut b, b"hello"));
    assert_eq!(got_a, message);
    assert_eq!(got_b, b"hello");

    // A half-close goes through: the echo server sees EOF and closes too.
    a.shutdown().await.expect("shutdown");
    assert!(closed_within(&mut a, PROMPT).await);

    let stats = proxy.stats();
    assert_eq!(stats.accepted, 2);
    assert_eq!(stats.reset, 0);
    let total = (message.len() + 5) as u64;
    assert_eq!(stats.bytes_forward, total);
    assert_eq!(stats.bytes_backward, total);
}

#[tokio::test]
async fn delay_adds_at_least_the_delay_each_way_and_keeps_order() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    round_trip(&mut stream, b"warm").await;

    // Set after connecting: applies to the open connection.
    let delay = Duration::from_millis(100);
    proxy.faults().set_delay(delay);
    assert_eq!(proxy.faults().delay(), delay);

    let start = Instant::now();
    assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");
    assert!(start.elapsed() >= 2 * delay, "{:?}", start.elapsed());

    // Several writes in flight at once come back whole and in order.
    let start = Instant::now();
    let mut expected = Vec::new();
    for i in 0..20u8 {
        let piece = [i; 100];
        stream.write_all(&piece).await.expect("write");
        expected.extend_from_slice(&piece);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = read_exact_within(&mut stream, expected.len(), PROMPT)
        .await
        .expect("echo");
    assert_eq!(got, expected);
    assert!(start.elapsed() >= 2 * delay, "{:?}", start.elapsed());

    proxy.faults().set_delay(Duration::ZERO);
    assert_eq!(round_trip(&mut stream, b"fast").await, b"fast");
}

#[tokio::test]
async fn partition_stalls_connections_and_heal_restores_them() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    let faults = proxy.faults();
    let mut before = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    round_trip(&mut before, b"up").await;
    assert_eq!(echo.accepted(), 1);

    faults.partition();
    assert!(faults.is_blocked(Direction::Forward) && faults.is_blocked(Direction::Backward));
    // The open connection stalls: no error, no answer.
    before.write_all(b"held").await.expect("write");
    assert_eq!(read_exact_within(&mut before, 4, QUIET).await, None);
    // A new connection is accepted by the proxy but goes nowhere.
    let mut during = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    during.write_all(b"late").await.expect("write");
    assert_eq!(read_exact_within(&mut during, 4, QUIET).await, None);
    assert_eq!(echo.accepted(), 1, "no connection reached the upstream");

    faults.heal();
    // What was held is delivered, in order, on both connections.
    assert_eq!(
        read_exact_within(&mut before, 4, PROMPT).await.as_deref(),
        Some(&b"held"[..])
    );
    assert_eq!(
        read_exact_within(&mut during, 4, PROMPT).await.as_deref(),
        Some(&b"late"[..])
    );
    let mut after = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    assert_eq!(round_trip(&mut after, b"again").await, b"again");
    assert_eq!(echo.accepted(), 3);
    assert_eq!(proxy.stats().reset, 0);
}

#[tokio::test]
async fn one_way_partition_blocks_only_that_direction() {
    let (upstream, mut accepted, _probe) = probe().await;
    let proxy = Proxy::start(loopback(), upstream).await.expect("proxy");
    let faults = proxy.faults();
    let mut client = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    let mut server = timeout(PROMPT, accepted.recv())
        .await
        .expect("upstream connection")
        .expect("probe running");

    faults.block(Direction::Forward);
    client.write_all(b"to-server").await.expect("write");
    server.write_all(b"to-client").await.expect("write");
    assert_eq!(
        read_exact_within(&mut client, 9, PROMPT).await.as_deref(),
        Some(&b"to-client"[..])
    );
    assert_eq!(read_exact_within(&mut server, 9, QUIET).await, None);
    faults.unblock(Direction::Forward);
    assert_eq!(
        read_exact_within(&mut server, 9, PROMPT).await.as_deref(),
        Some(&b"to-server"[..])
    );

    faults.block(Direction::Backward);
    assert!(!faults.is_blocked(Direction::Forward));
    client.write_all(b"up").await.expect("write");
    server.write_all(b"down").await.expect("write");
    assert_eq!(
        read_exact_within(&mut server, 2, PROMPT).await.as_deref(),
        Some(&b"up"[..])
    );
    assert_eq!(read_exact_within(&mut client, 4, QUIET).await, None);
    faults.heal();
    assert_eq!(
        read_exact_within(&mut client, 4, PROMPT).await.as_deref(),
        Some(&b"down"[..])
    );
}

#[tokio::test]
async fn one_way_partition_holds_new_connections() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    proxy.faults().block(Direction::Backward);
    let mut stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    stream.write_all(b"syn").await.expect("write");
    assert_eq!(read_exact_within(&mut stream, 3, QUIET).await, None);
    assert_eq!(echo.accepted(), 0, "a handshake needs both directions");
    proxy.faults().unblock(Direction::Backward);
    assert_eq!(
        read_exact_within(&mut stream, 3, PROMPT).await.as_deref(),
        Some(&b"syn"[..])
    );
}

#[tokio::test]
async fn reset_all_closes_every_connection() {
    let (upstream, mut accepted, _probe) = probe().await;
    let proxy = Proxy::start(loopback(), upstream).await.expect("proxy");
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        clients.push(
            TcpStream::connect(proxy.local_addr())
                .await
                .expect("connect"),
        );
        servers.push(
            timeout(PROMPT, accepted.recv())
                .await
                .expect("upstream connection")
                .expect("probe running"),
        );
    }
    // Also one held by a partition, not yet connected upstream.
    proxy.faults().block(Direction::Forward);
    let mut pending = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    // Reset covers what the proxy accepted, not what waits in its backlog.
    let deadline = Instant::now() + PROMPT;
    while proxy.stats().accepted < 3 {
        assert!(Instant::now() < deadline, "proxy did not accept");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    proxy.faults().reset_all();
    for stream in clients.iter_mut().chain(servers.iter_mut()) {
        assert!(closed_within(stream, PROMPT).await);
    }
    assert!(closed_within(&mut pending, PROMPT).await);
    proxy.faults().heal();

    // New connections are not affected.
    let mut fresh = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    let mut server = timeout(PROMPT, accepted.recv())
        .await
        .expect("upstream connection")
        .expect("probe running");
    fresh.write_all(b"new").await.expect("write");
    assert_eq!(
        read_exact_within(&mut server, 3, PROMPT).await.as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(proxy.stats().reset, 3);
    assert_eq!(proxy.stats().open, 1);
}

#[tokio::test]
async fn drops_reset_connections() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    let faults = proxy.faults();
    let mut stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    round_trip(&mut stream, b"ok").await;

    faults.set_drop(1.0);
    assert_eq!(faults.drop_probability(), 1.0);
    stream.write_all(b"doomed").await.expect("write");
    assert!(closed_within(&mut stream, PROMPT).await);
    assert_eq!(proxy.stats().reset, 1);

    // Out of range and NaN are tamed.
    faults.set_drop(7.0);
    assert_eq!(faults.drop_probability(), 1.0);
    faults.set_drop(f64::NAN);
    assert_eq!(faults.drop_probability(), 0.0);

    // A middling probability ends some connections and spares others.
    faults.reseed(42);
    faults.set_drop(0.5);
    let mut survived = 0;
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy.local_addr())
            .await
            .expect("connect");
        s.write_all(b"x").await.expect("write");
        let mut buf = [0u8; 1];
        if let Ok(Ok(1)) = timeout(PROMPT, s.read(&mut buf)).await {
            survived += 1;
        }
    }
    // Each echo survives both directions with probability 1/4.
    assert!(0 < survived && survived < 20, "{survived} of 20 survived");

    faults.set_drop(0.0);
    let mut s = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    assert_eq!(round_trip(&mut s, b"fine").await, b"fine");
}

#[tokio::test]
async fn unreachable_upstream_resets_the_client() {
    // A port that was just free: nothing listens there.
    let gone = TcpListener::bind(loopback()).await.expect("bind");
    let upstream = gone.local_addr().expect("address");
    drop(gone);
    let proxy = Proxy::start(loopback(), upstream).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.local_addr())
        .await
        .expect("connect");
    assert!(closed_within(&mut stream, PROMPT).await);
}

#[tokio::test]
async fn dropping_the_proxy_closes_everything() {
    let echo = Echo::start().await;
    let proxy = Proxy::start(loopback(), echo.addr).await.expect("proxy");
    let addr = proxy.local_addr();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    round_trip(&mut stream, b"alive").await;

    drop(proxy);
    assert!(closed_within(&mut stream, PROMPT).await);
    // The listener is gone too (allowing the runtime a moment to drop it).
    let deadline = Instant::now() + PROMPT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "proxy still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
