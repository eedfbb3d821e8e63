//! The server under test: started here (`keayl-demo`, killed on drop) or
//! given by `--url`; its `/metrics`, RSS and CPU, and where clients
//! connect from.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use keayl_bench::client::Target;
use keayl_bench::procfs::{self, CpuSample};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Args)]
pub(crate) struct ServerOpts {
    /// A running server (`http://127.0.0.1:3000`); without it, keayl-demo is
    /// started on a free port and stopped at the end.
    #[arg(long)]
    url: Option<String>,
    /// PID of the server at --url, for its RSS (not reported without it).
    #[arg(long)]
    pid: Option<u32>,
    /// The server binary to start (default: keayl-demo next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server's output goes (RUST_LOG=warn unless
    /// KEAYL_OPS_BENCH_SERVER_LOG says otherwise).
    #[arg(long, default_value = "/tmp/keayl-ops-bench-server.log")]
    server_log: PathBuf,
}

/// The server: started here (killed on drop) or given by --url.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: Option<u32>,
    child: Option<std::process::Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = match hostport.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => hostport.to_owned(),
    };
    hostport
        .parse()
        .with_context(|| format!("--url {url}: expected http://IP:PORT"))
}

impl Server {
    pub(crate) async fn start(opts: &ServerOpts) -> Result<Server> {
        if let Some(url) = &opts.url {
            let server = Server {
                addr: parse_url(url)?,
                pid: opts.pid,
                child: None,
            };
            server.wait_healthy().await?;
            if server.pid.is_none() {
                eprintln!("note: no --pid, so the server's RSS is not reported");
            }
            return Ok(server);
        }
        let bin = match &opts.server_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("keayl-demo"),
        };
        if !bin.exists() {
            bail!(
                "{} not found: run `cargo build --release -p keayl-demo`, or pass --server-bin / --url",
                bin.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(&opts.server_log)
            .with_context(|| format!("creating {}", opts.server_log.display()))?;
        let child = std::process::Command::new(&bin)
            .arg("--addr")
            .arg(addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("KEAYL_OPS_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("KEAYL_BROADCAST_SECRET")
            .env_remove("KEAYL_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Server {
            addr,
            pid: Some(child.id()),
            child: Some(child),
        };
        server.wait_healthy().await?;
        eprintln!(
            "started {} on {addr} (pid {}, log {})",
            bin.display(),
            server.pid.unwrap_or(0),
            opts.server_log.display()
        );
        Ok(server)
    }

    async fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match http_get(self.addr, "/health").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) if Instant::now() > deadline => {
                    bail!("{}/health answered {status}: {body}", self.addr)
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("server at {} not reachable", self.addr)));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A handle for reading metrics from another task (stops nothing).
    pub(crate) fn probe(&self) -> Server {
        Server {
            addr: self.addr,
            pid: self.pid,
            child: None,
        }
    }

    pub(crate) fn rss_kib(&self) -> Option<u64> {
        procfs::rss_kib(self.pid?)
    }

    pub(crate) fn cpu(&self) -> Option<CpuSample> {
        CpuSample::take(self.pid?)
    }

    pub(crate) async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = http_get(self.addr, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let mut m = BTreeMap::new();
        for line in body.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.trim().parse::<f64>()
            {
                m.insert(name.trim().to_owned(), v);
            }
        }
        Ok(Metrics(m))
    }

    /// RSS and the figures of /metrics, now.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        let m = self.metrics().await?;
        Ok(Snapshot {
            rss_kib: self.rss_kib(),
            tasks: m.get("keayl_runtime_alive_tasks"),
            connections: m.get("keayl_connections"),
            subscriptions: m.get("keayl_subscriptions"),
            streams: m.get("keayl_streams"),
            slow_disconnects: m.get("keayl_slow_disconnects_total"),
            queue_bytes: m.get("keayl_outbound_queue_bytes"),
        })
    }

    /// Wait until `keayl_connections` is at most `n` (`limit` at most);
    /// how long it took, `None` on timeout.
    pub(crate) async fn wait_connections_at_most(
        &self,
        n: f64,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if let Ok(m) = self.metrics().await
                && m.get("keayl_connections").is_some_and(|c| c <= n)
            {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `GET path` on a fresh connection; status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connect timeout")??;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(8 * 1024);
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("response timeout")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) rss_kib: Option<u64>,
    pub(crate) tasks: Option<f64>,
    pub(crate) connections: Option<f64>,
    pub(crate) subscriptions: Option<f64>,
    pub(crate) streams: Option<f64>,
    pub(crate) slow_disconnects: Option<f64>,
    pub(crate) queue_bytes: Option<f64>,
}

impl Snapshot {
    pub(crate) fn json(&self) -> Value {
        json!({
            "rss_kib": self.rss_kib,
            "alive_tasks": self.tasks,
            "connections": self.connections,
            "subscriptions": self.subscriptions,
            "streams": self.streams,
            "slow_disconnects_total": self.slow_disconnects,
            "outbound_queue_bytes": self.queue_bytes,
        })
    }
}

/// Client sockets from 127.0.0.2–127.0.0.30 when the server is on loopback
/// (each source address has its own ephemeral ports).
pub(crate) fn target_for(addr: SocketAddr) -> Target {
    let mut target = Target::new(addr);
    if let IpAddr::V4(v4) = addr.ip()
        && v4.is_loopback()
    {
        target.source_ips = (2..=30u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    }
    target
}

pub(crate) fn check_fds(sockets: usize) -> Result<()> {
    if let Err(e) = procfs::check_fd_budget(sockets) {
        eprintln!("error: {e}");
        return Err(e);
    }
    Ok(())
}
