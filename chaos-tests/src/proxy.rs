//! A fault-injecting TCP proxy, put on a node-to-node link to delay, cut or
//! partition it while the nodes run.
//!
//! [`Proxy::start`] listens on one address and forwards every connection it
//! accepts to one upstream, both ways. Its [`Faults`] handle changes what
//! happens to the bytes at any time, for the connections already open as well
//! as the ones to come:
//!
//! - **Delay** ([`Faults::set_delay`]): each chunk read from one side is
//!   written to the other no earlier than the delay after it was read. Chunks
//!   are delayed independently and in order, so the delay adds latency without
//!   throttling a stream to one chunk per delay.
//! - **Drops** ([`Faults::set_drop`]): TCP cannot lose bytes silently (a lost
//!   segment is retransmitted, and a stream with a hole in it is no stream),
//!   so what a lossy link does to a TCP peer is, at worst, end its
//!   connection. Each chunk has the given probability of doing so: the proxy
//!   resets both sides of that connection instead of forwarding the chunk.
//! - **Partitions** ([`Faults::block`], [`Faults::partition`]): see below.
//! - **Resets** ([`Faults::reset_all`]): every open connection is reset at
//!   once, as when a node restarts or a middlebox drops its state.
//!
//! # Partitions
//!
//! A partition holds bytes back, it does not close anything: on a real
//! network a partition silently loses packets, and TCP keeps retransmitting
//! until the partition heals (then the stream resumes where it stopped) or a
//! timeout above TCP gives up. That is what gRPC and HTTP/2 peers must cope
//! with, and the hard case for them: no error, just silence, until their own
//! keepalives or deadlines notice. Resetting connections would hand them an
//! error at once, which is the easy case (and which [`Faults::reset_all`]
//! models separately). So, while a direction is blocked:
//!
//! - on open connections, nothing is delivered in that direction. What the
//!   sender writes is held (up to a bounded amount per connection, after
//!   which the proxy stops reading, so the sender's own socket buffer fills
//!   as it would behind an unacknowledged window) and delivered, in order,
//!   once the direction is unblocked. The other direction flows as usual,
//!   which is what a one-way partition means;
//! - new connections are accepted by the proxy's socket (nothing in user space
//!   can stop the kernel completing the handshake) but not connected
//!   upstream until *both* directions are open again, since a TCP handshake
//!   needs packets both ways. The client sees a connection on which nothing
//!   ever answers, like a connect whose SYNs are lost; it times out at the
//!   first deadline it sets, and if it waits for the heal, its connection
//!   goes through then, as a retransmitted SYN would. (A client that gave up
//!   meanwhile is noticed at the heal, when its end of stream is forwarded.)
//!
//! Dropping the [`Proxy`] stops it: the listener closes and every connection
//! is closed with it.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use sigil_chaos::proxy::{Direction, Proxy};
//!
//! let upstream = "127.0.0.1:8301".parse().expect("address");
//! let proxy = Proxy::start("127.0.0.1:0".parse().expect("address"), upstream).await?;
//! // Point the peer at proxy.local_addr() instead of the upstream, then:
//! let faults = proxy.faults();
//! faults.set_delay(Duration::from_millis(50));
//! faults.block(Direction::Backward); // answers stop coming back
//! faults.heal();
//! faults.partition(); // nothing either way
//! faults.heal();
//! faults.reset_all();
//! println!("{:?}", proxy.stats());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{Instrument, debug, info_span, warn};

/// Largest chunk read from one side before it is forwarded.
const CHUNK: usize = 16 * 1024;

/// Chunks in flight per direction of a connection (delayed, or held by a
/// partition) before the proxy stops reading from the sender.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin on an error that persists.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client that connected to the proxy to the upstream.
    Forward,
    /// From the upstream back to the client.
    Backward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        })
    }
}

/// Which directions are partitioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Blocked {
    forward: bool,
    backward: bool,
}

impl Blocked {
    fn get(&self, direction: Direction) -> bool {
        match direction {
            Direction::Forward => self.forward,
            Direction::Backward => self.backward,
        }
    }

    fn set(&mut self, direction: Direction, blocked: bool) {
        match direction {
            Direction::Forward => self.forward = blocked,
            Direction::Backward => self.backward = blocked,
        }
    }

    fn any(&self) -> bool {
        self.forward || self.backward
    }
}

/// The runtime-controllable faults of one [`Proxy`]. Cheap to clone; every
/// clone controls the same proxy, and every change applies at once to open
/// connections and new ones alike.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    delay_nanos: AtomicU64,
    /// The drop probability's `f64` bits.
    drop_bits: AtomicU64,
    /// SplitMix64 state of the drop decisions.
    rng: AtomicU64,
    blocked: watch::Sender<Blocked>,
    /// Bumped by every [`Faults::reset_all`]; each connection ends when it
    /// sees a bump after it started.
    resets: watch::Sender<u64>,
}

impl Faults {
    fn new() -> Self {
        Self {
            inner: Arc::new(FaultState {
                delay_nanos: AtomicU64::new(0),
                drop_bits: AtomicU64::new(0f64.to_bits()),
                rng: AtomicU64::new(0),
                blocked: watch::Sender::new(Blocked::default()),
                resets: watch::Sender::new(0),
            }),
        }
    }

    /// Delays every chunk, in each direction, by `delay` (zero: no delay).
    /// Chunks already in flight keep the delay they were given.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.inner.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The current delay.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.inner.delay_nanos.load(Ordering::Relaxed))
    }

    /// Resets a connection, instead of forwarding a chunk, with this
    /// probability per chunk: 0 never (the default), 1 at its first chunk.
    /// Values outside [0, 1] are clamped and NaN counts as 0.
    pub fn set_drop(&self, probability: f64) {
        let p = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        self.inner.drop_bits.store(p.to_bits(), Ordering::Relaxed);
    }

    /// The current drop probability.
    pub fn drop_probability(&self) -> f64 {
        f64::from_bits(self.inner.drop_bits.load(Ordering::Relaxed))
    }

    /// Restarts the stream of drop decisions from `seed` (0 at start). The
    /// decisions are taken by chunks of all connections in the order they
    /// arrive, so a seed fixes the sequence of decisions, not which
    /// connection gets which.
    pub fn reseed(&self, seed: u64) {
        self.inner.rng.store(seed, Ordering::Relaxed);
    }

    /// Partitions one direction: nothing is delivered that way until
    /// [`unblock`](Faults::unblock) or [`heal`](Faults::heal), and new
    /// connections wait (see the module docs).
    pub fn block(&self, direction: Direction) {
        self.inner.blocked.send_modify(|b| b.set(direction, true));
    }

    /// Ends the partition of one direction; what was held is delivered.
    pub fn unblock(&self, direction: Direction) {
        self.inner.blocked.send_modify(|b| b.set(direction, false));
    }

    /// Whether `direction` is partitioned.
    pub fn is_blocked(&self, direction: Direction) -> bool {
        self.inner.blocked.borrow().get(direction)
    }

    /// Partitions both directions.
    pub fn partition(&self) {
        self.inner.blocked.send_replace(Blocked {
            forward: true,
            backward: true,
        });
    }

    /// Ends every partition. Delay and drops stay as they are.
    pub fn heal(&self) {
        self.inner.blocked.send_replace(Blocked::default());
    }

    /// Resets every open connection (both sides). Connections accepted
    /// afterwards are not affected.
    pub fn reset_all(&self) {
        self.inner.resets.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether the next chunk should end its connection.
    fn roll_drop(&self) -> bool {
        let p = self.drop_probability();
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom
        // number generators", OOPSLA 2014): one atomic add per draw keeps
        // concurrent connections off a lock.
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut z = self
            .inner
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits as a uniform float in [0, 1).
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What a [`Proxy`] has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now (including those waiting for a partition to
    /// heal before connecting upstream).
    pub open: u64,
    /// Connections the proxy reset: drops and [`Faults::reset_all`].
    pub reset: u64,
    /// Bytes delivered to the upstream.
    pub bytes_forward: u64,
    /// Bytes delivered back to clients.
    pub bytes_backward: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    reset: AtomicU64,
    bytes_forward: AtomicU64,
    bytes_backward: AtomicU64,
}

impl Counters {
    fn delivered(&self, direction: Direction, n: usize) {
        let counter = match direction {
            Direction::Forward => &self.bytes_forward,
            Direction::Backward => &self.bytes_backward,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Keeps [`Counters::open`] right however a connection task ends, aborts
/// included.
struct OpenGuard<'a>(&'a Counters);

impl<'a> OpenGuard<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the connection tasks share with the [`Proxy`].
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    faults: Faults,
    counters: Counters,
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `listen` (port 0 picks a free port: see
    /// [`local_addr`](Proxy::local_addr)) and forwards every connection to
    /// `upstream`, on the current tokio runtime. Fails only if it cannot
    /// listen; an unreachable upstream resets the connections that needed it.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Faults::new(),
            counters: Counters::default(),
        });
        let span = info_span!("proxy", listen = %local_addr, upstream = %upstream);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)).instrument(span));
        debug!(listen = %local_addr, upstream = %upstream, "proxy started");
        Ok(Proxy {
            local_addr,
            shared,
            task,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// A handle on this proxy's faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            bytes_forward: c.bytes_forward.load(Ordering::Relaxed),
            bytes_backward: c.bytes_backward.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept loop owns the listener and, through its JoinSet, every
        // connection task: aborting it drops them all, closing their sockets.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    // Subscribed here, not in the task, so that a reset_all
                    // right after this accept already covers the connection.
                    let resets = shared.faults.inner.resets.subscribe();
                    let span = info_span!("connection", peer = %peer);
                    connections.spawn(
                        connection(client, Arc::clone(&shared), resets).instrument(span),
                    );
                }
                Err(error) => {
                    warn!(error = %error, "proxy accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Why a connection ended abnormally; it is then reset on both sides.
#[derive(Debug)]
enum Abort {
    /// The drop fault chose this connection.
    Dropped(Direction),
    /// [`Faults::reset_all`] (or the proxy is going away).
    Reset,
    /// Reading or writing one side failed; the other side learns by reset.
    Io(Direction, io::Error),
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Abort::Dropped(d) => write!(f, "dropped by fault ({d})"),
            Abort::Reset => f.write_str("reset by fault"),
            Abort::Io(d, e) => write!(f, "{d}: {e}"),
        }
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>, mut resets: watch::Receiver<u64>) {
    let _open = OpenGuard::new(&shared.counters);
    let faults = &shared.faults;

    // A TCP handshake needs both directions: while either is blocked, the
    // connection is not made upstream (see the module docs).
    let mut blocked = faults.inner.blocked.subscribe();
    let clear = async { blocked.wait_for(|b| !b.any()).await.is_ok() };
    let proceed = tokio::select! {
        clear = clear => clear,
        _ = resets.changed() => false,
    };
    if !proceed {
        reset(&shared, &client, None, &Abort::Reset);
        return;
    }

    let upstream = tokio::select! {
        connected = TcpStream::connect(shared.upstream) => match connected {
            Ok(upstream) => upstream,
            Err(error) => {
                reset(&shared, &client, None, &Abort::Io(Direction::Forward, error));
                return;
            }
        },
        _ = resets.changed() => {
            reset(&shared, &client, None, &Abort::Reset);
            return;
        }
    };
    // Chunks are forwarded as they come; Nagle on the proxy would add its own
    // delay to the injected one.
    for stream in [&client, &upstream] {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(error = %error, "cannot disable nagle on a proxied socket");
        }
    }
    debug!("proxy connection open");

    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let outcome = tokio::select! {
        piped = async {
            tokio::try_join!(
                pump(Direction::Forward, &mut client_read, &mut upstream_write, &shared),
                pump(Direction::Backward, &mut upstream_read, &mut client_write, &shared),
            )
        } => piped.map(|_| ()),
        _ = resets.changed() => Err(Abort::Reset),
    };
    match outcome {
        Ok(()) => debug!("proxy connection closed"),
        Err(abort) => {
            let client = client_read.as_ref();
            reset(&shared, client, Some(upstream_read.as_ref()), &abort);
        }
    }
}

/// Makes the sockets send a reset, not a FIN, when they are dropped: a
/// connection cut by a fault must look broken to both peers, never like an
/// orderly end of stream.
fn reset(shared: &Shared, client: &TcpStream, upstream: Option<&TcpStream>, abort: &Abort) {
    shared.counters.reset.fetch_add(1, Ordering::Relaxed);
    debug!(reason = %abort, "proxy connection reset");
    for stream in std::iter::once(client).chain(upstream) {
        if let Err(error) = stream.set_zero_linger() {
            debug!(error = %error, "cannot arm reset on a proxied socket");
        }
    }
}

/// A chunk on its way, and when it may be delivered.
#[derive(Debug)]
struct Chunk {
    due: Instant,
    bytes: Bytes,
}

/// Forwards one direction until the sender closes it (then closes it towards
/// the receiver), or fails with the reason to abort the connection.
///
/// Reading and writing are two halves joined by a bounded queue, so that a
/// delayed or held chunk does not stop the next ones being read and
/// timestamped: each chunk's delay counts from when it was read.
async fn pump(
    direction: Direction,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
) -> Result<(), Abort> {
    let faults = &shared.faults;
    let (queue, mut arrivals) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);

    let read = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let n = from
                .read_buf(&mut buf)
                .await
                .map_err(|e| Abort::Io(direction, e))?;
            if n == 0 {
                // End of stream: dropping the queue lets the writer drain and
                // pass the FIN on.
                return Ok(());
            }
            if faults.roll_drop() {
                return Err(Abort::Dropped(direction));
            }
            let chunk = Chunk {
                due: Instant::now() + faults.delay(),
                bytes: buf.split().freeze(),
            };
            if queue.send(chunk).await.is_err() {
                // The writer stopped, and its error is the one reported.
                return Ok(());
            }
        }
    };

    let write = async {
        let mut blocked = faults.inner.blocked.subscribe();
        while let Some(chunk) = arrivals.recv().await {
            sleep_until(chunk.due).await;
            if blocked.wait_for(|b| !b.get(direction)).await.is_err() {
                return Err(Abort::Reset);
            }
            to.write_all(&chunk.bytes)
                .await
                .map_err(|e| Abort::Io(direction, e))?;
            shared.counters.delivered(direction, chunk.bytes.len());
        }
        to.shutdown().await.map_err(|e| Abort::Io(direction, e))
    };

    tokio::try_join!(read, write).map(|_| ())
}
