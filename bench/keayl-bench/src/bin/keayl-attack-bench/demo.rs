//! The demo process: a fresh `keayl-demo` per attack on a free loopback
//! port, what it logs, its RSS, and stopping it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keayl_bench::client::Target;
use keayl_bench::procfs;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::cli::Ctx;
use crate::util::{lock, note};
use crate::wire::health_once;

/// What the demo wrote to stdout and stderr.
#[derive(Debug, Default)]
struct LogCount {
    bytes: AtomicU64,
    lines: AtomicU64,
    head: Mutex<String>,
}

impl LogCount {
    fn add(&self, chunk: &[u8]) {
        self.bytes.fetch_add(chunk.len() as u64, Relaxed);
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
        self.lines.fetch_add(newlines as u64, Relaxed);
        let mut head = lock(&self.head);
        let room = 4096usize.saturating_sub(head.len());
        head.push_str(&String::from_utf8_lossy(&chunk[..chunk.len().min(room)]));
    }

    fn first_line(&self) -> Option<String> {
        let head = lock(&self.head);
        let line = head.lines().find(|l| !l.trim().is_empty())?;
        Some(strip_ansi(line).chars().take(200).collect())
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn count_log(pipe: Option<impl AsyncRead + Unpin + Send + 'static>, log: &Arc<LogCount>) {
    let Some(mut pipe) = pipe else { return };
    let log = log.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            log.add(&buf[..n]);
        }
    });
}

/// A `keayl-demo` child process (killed on drop).
#[derive(Debug)]
pub(crate) struct Demo {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    child: Child,
    log: Arc<LogCount>,
}

impl Demo {
    /// Start the demo on a free loopback port with `extra` arguments; wait
    /// until `/health` answers 200. The error carries what the demo printed
    /// if it exited.
    pub(crate) async fn start(ctx: &Ctx, extra: &[&str]) -> Result<Demo> {
        if !ctx.demo.exists() {
            bail!(
                "{} not found: run `cargo build --release -p keayl-demo` or pass --demo",
                ctx.demo.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new(&ctx.demo)
            .arg("--addr")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("KEAYL_BROADCAST_SECRET")
            .env_remove("KEAYL_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", ctx.demo.display()))?;
        let log = Arc::new(LogCount::default());
        count_log(child.stdout.take(), &log);
        count_log(child.stderr.take(), &log);
        let pid = child.id().context("the demo exited at once")?;
        let mut demo = Demo {
            addr,
            pid,
            child,
            log,
        };
        demo.wait_healthy().await?;
        note(format!("demo pid {pid} on {addr} {}", extra.join(" ")));
        Ok(demo)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let said = lock(&self.log.head).trim().to_owned();
                bail!("the demo exited ({status}): {said}");
            }
            match health_once(self.addr).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("the demo never answered /health"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub(crate) fn target(&self) -> Target {
        Target::new(self.addr)
    }

    pub(crate) fn rss(&self) -> Option<u64> {
        procfs::rss_kib(self.pid)
    }

    pub(crate) fn log_bytes(&self) -> u64 {
        self.log.bytes.load(Relaxed)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill and reap it; whether it was still running.
    pub(crate) async fn stop(mut self) -> bool {
        let alive = self.alive();
        if let Some(line) = self.log.first_line() {
            let (bytes, lines) = (self.log_bytes(), self.log.lines.load(Relaxed));
            note(format!(
                "demo logged {bytes} bytes, {lines} lines; first: {line}"
            ));
        }
        let _ = self.child.kill().await;
        alive
    }
}
