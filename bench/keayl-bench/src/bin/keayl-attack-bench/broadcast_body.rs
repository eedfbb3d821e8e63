//! The `broadcast-body` attack: unauthenticated `POST /_broadcast`
//! announcing a 2 MB body sent slowly or never, then keep-alive clients
//! hammering with a wrong secret (the demo's log volume).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use keayl_bench::client::Target;
use keayl_bench::procfs;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::cli::{Ctx, pick};
use crate::demo::Demo;
use crate::fleet::{Fleet, FleetSummary, Script};
use crate::report::{Report, Rss};
use crate::util::{note, r1};
use crate::watchers::Sampler;
use crate::wire::parse_status;

#[derive(Debug, Clone, Default, Args)]
pub(crate) struct BodyArgs {
    /// Connections per variant (wrong secret + no body, no secret + slow
    /// body) [default: 400; --quick: 100].
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds to wait for their answers [default: 10; --quick: 4].
    #[arg(long)]
    wait: Option<u64>,
    /// Seconds of wrong-secret hammering for the log volume [default: 5; --quick: 3].
    #[arg(long)]
    hammer: Option<u64>,
}

const SECRET: &str = "s3cret";

fn post_head(addr: SocketAddr, auth: Option<&str>, length: usize, body: &str) -> Vec<u8> {
    let auth = auth.map_or(String::new(), |s| format!("Authorization: Bearer {s}\r\n"));
    format!(
        "POST /_broadcast HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n{body}"
    )
    .into_bytes()
}

/// A keep-alive HTTP/1.1 client connection.
#[derive(Debug)]
struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Send `req`, read the answer: its status and whether the connection
    /// stays open.
    async fn request(&mut self, req: &[u8]) -> Result<(u16, bool)> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.read_more().await? == 0 {
                bail!("closed before the answer");
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = parse_status(&self.buf).context("no HTTP status")?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            if self.read_more().await? == 0 {
                bail!("closed in the answer's body");
            }
        }
        Ok((status, !head.contains("connection: close")))
    }

    async fn read_more(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .context("no answer within 5 s")??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Hammer {
    secs: f64,
    clients: usize,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    connections: u64,
    errors: u64,
    log_bytes: u64,
    log_bytes_per_s: f64,
}

async fn hammer_one(target: Target, until: Instant) -> Hammer {
    let req = post_head(target.addr, Some("wrong"), 2, "{}");
    let mut h = Hammer::default();
    let mut conn: Option<HttpConn> = None;
    while Instant::now() < until {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match target.tcp().await {
                Ok(stream) => {
                    h.connections += 1;
                    HttpConn {
                        stream,
                        buf: Vec::new(),
                    }
                }
                Err(_) => {
                    h.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match c.request(&req).await {
            Ok((status, keep)) => {
                h.requests += 1;
                *h.statuses.entry(status).or_insert(0) += 1;
                conn = keep.then_some(c);
            }
            Err(_) => h.errors += 1,
        }
    }
    h
}

/// `clients` keep-alive clients POST with a wrong secret for `secs`; the
/// demo's log volume meanwhile.
async fn hammer(demo: &Demo, clients: usize, secs: u64) -> Hammer {
    let log0 = demo.log_bytes();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for _ in 0..clients {
        set.spawn(hammer_one(demo.target(), until));
    }
    let mut total = Hammer {
        clients,
        ..Hammer::default()
    };
    for h in set.join_all().await {
        total.requests += h.requests;
        total.connections += h.connections;
        total.errors += h.errors;
        for (s, n) in h.statuses {
            *total.statuses.entry(s).or_insert(0) += n;
        }
    }
    // Let the log pipe drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    total.secs = r1(start.elapsed().as_secs_f64());
    total.log_bytes = demo.log_bytes() - log0;
    total.log_bytes_per_s = r1(total.log_bytes as f64 / secs.max(1) as f64);
    total
}

#[derive(Debug, Serialize)]
struct BodyResult {
    wrong_secret_no_body: FleetSummary,
    no_secret_slow_body: FleetSummary,
    rss: Rss,
    log_bytes_attack: u64,
    hammer: Hammer,
    demo_alive: bool,
}

/// Run the `broadcast-body` attack against a fresh demo (with a broadcast secret).
pub(crate) async fn run(ctx: &Ctx, a: &BodyArgs) -> Result<Report> {
    let sockets = pick(a.sockets, 400, 100, ctx.quick);
    let wait = pick(a.wait, 10, 4, ctx.quick);
    let secs = pick(a.hammer, 5, 3, ctx.quick);
    procfs::check_fd_budget(2 * sockets)?;
    let demo = Demo::start(ctx, &["--broadcast-secret", SECRET]).await?;
    let (before, sampler) = (demo.rss(), Sampler::rss(demo.pid));
    note(format!(
        "broadcast-body: 2 × {sockets} unauthenticated POSTs announcing 2 MB"
    ));
    let target = demo.target();
    let never = Script::once(post_head(demo.addr, Some("wrong"), 2_000_000, ""));
    let slow = Script::trickled(
        post_head(demo.addr, None, 2_000_000, ""),
        Duration::from_secs(1),
        b"x",
    );
    let (never, slow) = tokio::join!(
        Fleet::open(&target, sockets, &never),
        Fleet::open(&target, sockets, &slow)
    );
    let deadline = never.opened_at.max(slow.opened_at) + Duration::from_secs(wait);
    never
        .wait_until(deadline, Fleet::all_answered_or_closed)
        .await;
    slow.wait_until(deadline, Fleet::all_answered_or_closed)
        .await;
    let after = demo.rss();
    let peak = sampler.finish().await.rss_kib;
    let (s_never, s_slow) = (never.summary(), slow.summary());
    tokio::join!(never.close(), slow.close());
    let log_bytes_attack = demo.log_bytes();
    note(format!(
        "broadcast-body: 4 clients hammer with a wrong secret for {secs} s"
    ));
    let hammer = hammer(&demo, 4, secs).await;
    let r = BodyResult {
        wrong_secret_no_body: s_never,
        no_secret_slow_body: s_slow,
        rss: Rss::new(before, peak, after),
        log_bytes_attack,
        hammer,
        demo_alive: demo.stop().await,
    };
    Ok(r.report())
}

impl BodyResult {
    fn report(self) -> Report {
        let n = self.wrong_secret_no_body.sockets;
        let did = format!(
            "{n} POST /_broadcast with a wrong secret and Content-Length 2000000, body never \
             sent; {n} without Authorization, body trickled 1 byte/s; then 4 clients hammer \
             with a wrong secret"
        );
        let prompt = |f: &FleetSummary| {
            f.connected > 0
                && f.statuses.get(&401) == Some(&f.connected)
                && f.answer_ms_max.is_some_and(|m| m <= 1000.0)
        };
        let resisted = prompt(&self.wrong_secret_no_body)
            && prompt(&self.no_secret_slow_body)
            && self.rss.peak_growth_mib.is_some_and(|g| g < 32.0)
            && self.hammer.log_bytes_per_s < 10_240.0
            && self.demo_alive;
        let statuses: Vec<String> = self
            .hammer
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}× {s}"))
            .collect();
        let rate = self.hammer.requests as f64 / self.hammer.secs.max(0.1);
        let mut r = Report::new("broadcast-body", did, &self);
        for (name, f) in [
            ("wrong secret, no body", &self.wrong_secret_no_body),
            ("no secret, slow body", &self.no_secret_slow_body),
        ] {
            r.rows
                .add(&format!("{name}: connected"), f.connect_line())
                .add(&format!("{name}: answers"), f.answers_line())
                .add(&format!("{name}: closed"), f.closes_line());
        }
        r.rows
            .add("demo RSS", self.rss.line())
            .add(
                "demo log during the above",
                format!("{} bytes", self.log_bytes_attack),
            )
            .add(
                "hammer",
                format!(
                    "{} requests in {} s ({rate:.0}/s) [{}], {} connections, {} errors",
                    self.hammer.requests,
                    self.hammer.secs,
                    statuses.join(", "),
                    self.hammer.connections,
                    self.hammer.errors
                ),
            )
            .add(
                "demo log while hammered",
                format!(
                    "{} bytes ({} bytes/s)",
                    self.hammer.log_bytes, self.hammer.log_bytes_per_s
                ),
            );
        r.judged(
            resisted,
            "every POST answered 401 within 1 s, peak RSS growth < 32 MiB, \
             log < 10 KiB/s while hammered, demo alive",
        )
    }
}
