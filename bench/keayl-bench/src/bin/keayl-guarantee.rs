//! `keayl-guarantee`: the reliable-streams guarantee, measured.
//!
//! Starts two `cable-fixture` processes sharing one pub/sub backend
//! (Redis by default), connects `--clients` extended-protocol clients
//! spread over both, subscribed to one `ChatChannel` room, and publishes
//! `--broadcasts` numbered messages through `POST /_broadcast`. Meanwhile
//! `--cut` of the clients lose their socket at a random moment (dropped
//! without a close frame) and reconnect, after a random pause, to a random
//! process, as `@anycable/core` does: with their session id (`?sid=`), then
//! a `history` request from the last position they saw, or, when the
//! session is not restored, a `subscribe` carrying that position. With
//! `--kill`, one process is killed with SIGKILL halfway through instead,
//! and its clients move to the other.
//!
//! Every client must end with exactly the published sequence: the run
//! prints, over all clients, the messages lost, duplicated and out of
//! order (all three must be 0), and exits non-zero otherwise.
//!
//! ```text
//! cargo build --release -p keayl-demo --bins -p keayl-bench
//! target/release/keayl-guarantee                 # cuts, Redis
//! target/release/keayl-guarantee --kill          # kill -9 of one process
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use keayl_bench::client::{HttpBroadcaster, Target, wait_listening};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reliable streams: every client gets every broadcast once, in order, across cuts and a killed process"
)]
struct Args {
    /// Clients (spread over the two processes).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Numbered broadcasts.
    #[arg(long, default_value_t = 2000)]
    broadcasts: u64,
    /// Broadcasts per second. A client away for longer than the history
    /// holds (100 messages by default) would get `reject_history`: keep
    /// `rate × (pause + reconnect)` under it.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Fraction of the clients whose socket is cut at a random moment.
    #[arg(long, default_value_t = 0.2)]
    cut: f64,
    /// Longest pause before a cut client reconnects, in milliseconds.
    #[arg(long, default_value_t = 500)]
    max_pause_ms: u64,
    /// Kill one process with SIGKILL halfway through (instead of cuts).
    #[arg(long)]
    kill: bool,
    /// The pub/sub backend both processes share.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pubsub: String,
    /// The fixture binary (default: cable-fixture next to this binary).
    #[arg(long)]
    fixture_bin: Option<PathBuf>,
    /// How long to wait for stragglers after the last broadcast.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
}

/// A started fixture process (killed on drop).
struct Process {
    addr: SocketAddr,
    child: Option<Child>,
    alive: AtomicBool,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn fixture_bin(args: &Args) -> Result<PathBuf> {
    if let Some(bin) = &args.fixture_bin {
        return Ok(bin.clone());
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("cable-fixture");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p keayl-demo --bins) or pass --fixture-bin",
            bin.display()
        );
    }
    Ok(bin)
}

async fn start_process(bin: &PathBuf, pubsub: &str) -> Result<Process> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Command::new(bin)
        .args(["--addr", &addr.to_string(), "--pubsub", pubsub])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    wait_listening(addr, Duration::from_secs(20)).await?;
    Ok(Process {
        addr,
        child: Some(child),
        alive: AtomicBool::new(true),
    })
}

/// xorshift64*: a cheap, seedable source of random moments and choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// What the run counts over all clients.
#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    restored: AtomicU64,
    resubscribed: AtomicU64,
    rejected_history: AtomicU64,
    subscribed: AtomicUsize,
}

/// Where a client is in the stream.
#[derive(Clone)]
struct Seen {
    stream: String,
    epoch: String,
    offset: u64,
}

struct Client {
    id: usize,
    identifier: Arc<str>,
    received: Vec<u64>,
    seen: Option<Seen>,
    sid: Option<String>,
    confirmed_once: bool,
    /// When, after the first broadcast, this client's socket is cut.
    cut_after: Option<Duration>,
    /// When the first broadcast was published.
    go: tokio::sync::watch::Receiver<Option<Instant>>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, sid: Option<&str>) -> Result<Ws> {
    let target = Target::new(addr);
    let stream = target.tcp().await?;
    let url = match sid {
        Some(sid) => format!("ws://{addr}/cable?sid={sid}"),
        None => format!("ws://{addr}/cable"),
    };
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static("actioncable-v1-ext-json"),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

enum Ended {
    /// The socket died (or was cut): reconnect.
    Lost,
    /// Every broadcast arrived, or the run is over.
    Done,
}

impl Client {
    fn history(&self) -> Value {
        match &self.seen {
            Some(s) => {
                json!({"streams": {s.stream.clone(): {"offset": s.offset, "epoch": s.epoch}}})
            }
            // Nothing received yet: everything of the last minute.
            None => json!({"since": unix_now().saturating_sub(60)}),
        }
    }

    /// One connection's life: welcome, (re)subscribe or history, frames
    /// until the socket dies, the cut moment comes, or the run ends.
    async fn session(
        &mut self,
        ws: &mut Ws,
        total: u64,
        over: &AtomicBool,
        counters: &Counters,
    ) -> Result<Ended> {
        let welcome = next_frame(ws).await?.context("closed before welcome")?;
        if welcome["type"] != "welcome" {
            bail!("expected welcome, got {welcome}");
        }
        self.sid = welcome["sid"].as_str().map(str::to_owned);
        let restored = welcome["restored"] == true
            && welcome["restored_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i.as_str() == Some(&self.identifier)));
        let command = if restored {
            counters.restored.fetch_add(1, Ordering::Relaxed);
            json!({"command": "history", "identifier": &*self.identifier, "history": self.history()})
        } else if self.confirmed_once {
            counters.resubscribed.fetch_add(1, Ordering::Relaxed);
            json!({"command": "subscribe", "identifier": &*self.identifier, "history": self.history()})
        } else {
            json!({"command": "subscribe", "identifier": &*self.identifier})
        };
        ws.send(Message::text(command.to_string())).await?;
        loop {
            if self.received.len() as u64 >= total || over.load(Ordering::Relaxed) {
                return Ok(Ended::Done);
            }
            let cut_at = self
                .cut_after
                .and_then(|after| (*self.go.borrow()).map(|start| start + after));
            let wait = match cut_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_millis(100),
            };
            let frame = match tokio::time::timeout(wait, next_frame(ws)).await {
                Err(_) if cut_at.is_some() => {
                    self.cut_after = None;
                    return Ok(Ended::Lost);
                }
                Err(_) => continue,
                Ok(Err(_)) | Ok(Ok(None)) => return Ok(Ended::Lost),
                Ok(Ok(Some(frame))) => frame,
            };
            if let Some(message) = frame.get("message") {
                let Some(n) = message["n"].as_u64() else {
                    continue;
                };
                self.received.push(n);
                if let (Some(stream), Some(epoch), Some(offset)) = (
                    frame["stream_id"].as_str(),
                    frame["epoch"].as_str(),
                    frame["offset"].as_u64(),
                ) {
                    self.seen = Some(Seen {
                        stream: stream.to_owned(),
                        epoch: epoch.to_owned(),
                        offset,
                    });
                }
                continue;
            }
            match frame["type"].as_str() {
                Some("confirm_subscription") if !self.confirmed_once => {
                    self.confirmed_once = true;
                    counters.subscribed.fetch_add(1, Ordering::Relaxed);
                }
                Some("reject_history") => {
                    counters.rejected_history.fetch_add(1, Ordering::Relaxed);
                }
                Some("disconnect") => return Ok(Ended::Lost),
                _ => {}
            }
        }
    }
}

/// The next text frame as JSON (pings skipped); `None` when the socket ended.
async fn next_frame(ws: &mut Ws) -> Result<Option<Value>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t)?;
                if v["type"] == "ping" {
                    continue;
                }
                return Ok(Some(v));
            }
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn pick_alive(processes: &[Arc<Process>], rng: &mut Rng) -> Option<Arc<Process>> {
    let alive: Vec<&Arc<Process>> = processes
        .iter()
        .filter(|p| p.alive.load(Ordering::Relaxed))
        .collect();
    if alive.is_empty() {
        return None;
    }
    Some(alive[rng.below(alive.len() as u64) as usize].clone())
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    mut client: Client,
    processes: Arc<Vec<Arc<Process>>>,
    max_pause: u64,
    total: u64,
    over: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Client {
    let mut rng = Rng::new(client.id as u64 + 1);
    let mut first = true;
    let mut process = processes[client.id % processes.len()].clone();
    loop {
        if !first {
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20 + rng.below(max_pause))).await;
            match pick_alive(&processes, &mut rng) {
                Some(p) => process = p,
                None => return client,
            }
        }
        first = false;
        let Ok(mut ws) = connect(process.addr, client.sid.as_deref()).await else {
            if over.load(Ordering::Relaxed) {
                return client;
            }
            continue;
        };
        let ended = client.session(&mut ws, total, &over, &counters).await;
        // A cut: the socket is dropped without a close frame.
        drop(ws);
        match ended {
            Ok(Ended::Done) => return client,
            Ok(Ended::Lost) | Err(_) => {
                if over.load(Ordering::Relaxed) {
                    return client;
                }
            }
        }
    }
}

/// Lost, duplicated and out-of-order messages of one received sequence
/// against `1..=total`.
fn audit(received: &[u64], total: u64) -> (u64, u64, u64) {
    let mut count = vec![0u32; total as usize + 1];
    let mut out_of_order = 0;
    let mut last = 0;
    for &n in received {
        if (1..=total).contains(&n) {
            count[n as usize] += 1;
        }
        if n < last {
            out_of_order += 1;
        }
        last = last.max(n);
    }
    let lost = count[1..].iter().filter(|&&c| c == 0).count() as u64;
    let duplicated = count[1..].iter().map(|&c| c.saturating_sub(1) as u64).sum();
    (lost, duplicated, out_of_order)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = fixture_bin(&args)?;
    let a = Arc::new(start_process(&bin, &args.pubsub).await?);
    let b = Arc::new(start_process(&bin, &args.pubsub).await?);
    let processes = Arc::new(vec![a.clone(), b.clone()]);
    let room = format!("guarantee-{}-{}", std::process::id(), unix_now());
    let identifier: Arc<str> = json!({"channel": "ChatChannel", "room": room})
        .to_string()
        .into();
    let stream = format!("room:{room}");
    let total = args.broadcasts;
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let publish_time = period * total as u32;
    let over = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());

    let started = Instant::now();
    let mut rng = Rng::new(unix_now());
    let cut_count = if args.kill {
        0
    } else {
        (args.clients as f64 * args.cut).round() as usize
    };
    // Broadcasts start once everyone is subscribed; cuts fall within them.
    let subscribe_grace = Duration::from_secs(10);
    let mut tasks = Vec::with_capacity(args.clients);
    let mut cut_offsets = Vec::new();
    for id in 0..args.clients {
        cut_offsets.push(
            (id < cut_count)
                .then(|| Duration::from_millis(rng.below(publish_time.as_millis() as u64 + 1))),
        );
    }
    let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    for (id, cut_after) in cut_offsets.into_iter().enumerate() {
        let client = Client {
            id,
            identifier: identifier.clone(),
            received: Vec::with_capacity(total as usize),
            seen: None,
            sid: None,
            confirmed_once: false,
            cut_after,
            go: go_rx.clone(),
        };
        let (processes, over, counters) = (processes.clone(), over.clone(), counters.clone());
        let max_pause = args.max_pause_ms;
        tasks.push(tokio::spawn(run_client(
            client, processes, max_pause, total, over, counters,
        )));
        if id % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + subscribe_grace;
    while counters.subscribed.load(Ordering::Relaxed) < args.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribed = counters.subscribed.load(Ordering::Relaxed);
    if subscribed < args.clients {
        bail!(
            "only {subscribed} of {} clients subscribed within {subscribe_grace:?}",
            args.clients
        );
    }

    // Publish 1..=total, alternating between the processes (only through
    // the survivor when one is killed: a POST cut by the kill could not
    // tell whether it was published).
    let publish_started = Instant::now();
    let _ = go_tx.send(Some(publish_started));
    let mut broadcasters = [
        HttpBroadcaster::connect(&Target::new(a.addr)).await?,
        HttpBroadcaster::connect(&Target::new(b.addr)).await?,
    ];
    let mut killed_at = None;
    for n in 1..=total {
        if args.kill && killed_at.is_none() && n > total / 2 {
            kill(&b);
            killed_at = Some(publish_started.elapsed());
        }
        let via = if args.kill { 0 } else { (n % 2) as usize };
        let body = json!({"stream": stream, "data": json!({"n": n}).to_string()}).to_string();
        broadcasters[via]
            .post(&body)
            .await
            .with_context(|| format!("broadcast {n}"))?;
        let due = publish_started + period * n as u32;
        tokio::time::sleep_until(due.into()).await;
    }
    let published_in = publish_started.elapsed();

    // Stragglers catch up, then the run ends.
    let settle_deadline = Instant::now() + Duration::from_secs(args.settle_secs);
    let tasks_done = async {
        let mut clients = Vec::with_capacity(tasks.len());
        for t in tasks {
            clients.push(t.await?);
        }
        anyhow::Ok(clients)
    };
    let over_at = over.clone();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep_until(settle_deadline.into()).await;
        over_at.store(true, Ordering::Relaxed);
    });
    let clients = tasks_done.await?;
    stopper.abort();
    let caught_up_in = publish_started.elapsed();

    let (mut lost, mut duplicated, mut out_of_order, mut exact) = (0, 0, 0, 0);
    for c in &clients {
        let (l, d, o) = audit(&c.received, total);
        lost += l;
        duplicated += d;
        out_of_order += o;
        if l == 0 && d == 0 && o == 0 {
            exact += 1;
        }
    }
    println!(
        "keayl-guarantee: {} clients over 2 processes on {}, {} broadcasts at {:.0}/s",
        args.clients,
        keayl_broker_scheme(&args.pubsub),
        total,
        args.rate
    );
    if args.kill {
        println!(
            "  kill -9 of one process at {:.1} s (after broadcast {})",
            killed_at.map_or(0.0, |d| d.as_secs_f64()),
            total / 2
        );
    } else {
        println!(
            "  {cut_count} clients cut at random moments, reconnecting after 20-{} ms to a random process",
            20 + args.max_pause_ms
        );
    }
    println!(
        "  reconnects {}  sessions restored {}  resubscribed with a position {}  reject_history {}",
        counters.reconnects.load(Ordering::Relaxed),
        counters.restored.load(Ordering::Relaxed),
        counters.resubscribed.load(Ordering::Relaxed),
        counters.rejected_history.load(Ordering::Relaxed),
    );
    println!(
        "  published in {:.1} s, every client done {:.1} s after the first broadcast",
        published_in.as_secs_f64(),
        caught_up_in.as_secs_f64()
    );
    println!(
        "  lost {lost}  duplicated {duplicated}  out of order {out_of_order}  exact sequences {exact}/{}",
        clients.len()
    );
    println!("  total run {:.1} s", started.elapsed().as_secs_f64());
    if lost + duplicated + out_of_order > 0 || exact != clients.len() {
        bail!("the guarantee did not hold");
    }
    Ok(())
}

fn keayl_broker_scheme(url: &str) -> &str {
    url.split("://").next().unwrap_or(url)
}

/// SIGKILL the process (its sockets die without a close frame).
fn kill(p: &Process) {
    p.alive.store(false, Ordering::Relaxed);
    if let Some(child) = &p.child {
        // `kill -9 <pid>`: `Child::kill` would need the process exclusively.
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
    }
}
