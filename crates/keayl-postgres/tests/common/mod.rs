//! Helpers shared by the PostgreSQL integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/private.rs"]
mod private;
#[path = "../../../keayl-cable/tests/support/broker.rs"]
mod support;

#[allow(unused_imports)]
pub use private::{Frozen, PrivatePostgres};
#[allow(unused_imports)]
pub use support::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keayl_postgres::{PostgresConfig, PostgresPubSub};

/// The database the tests use (`KEAYL_POSTGRES_URL`, default the machine's
/// `test` database).
pub fn pg_url() -> String {
    std::env::var("KEAYL_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `host:port` of a `postgres://…` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let hp = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:5432")
    }
}

/// `url` with `application_name` set (to find the backend's sessions).
pub fn with_app_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// A unique application name.
pub fn unique_app_name(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "keayl-test-{label}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the machine's PostgreSQL is reachable (see [`require_service`]).
pub fn require_pg() -> bool {
    require_service("PostgreSQL", &host_port(&pg_url()))
}

/// Fast-reconnecting test configuration for `url`.
pub fn fast_config(url: &str) -> PostgresConfig {
    let mut c = PostgresConfig::from_url(url).expect("valid PostgreSQL URL");
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(400);
    c.command_timeout = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(1);
    c
}

/// A connected backend (waits until it is up).
pub async fn connected(config: PostgresConfig) -> PostgresPubSub {
    let p = PostgresPubSub::new(config).expect("backend starts");
    assert!(
        p.health().wait_up(Duration::from_secs(10)).await,
        "backend did not connect: {:?}",
        p.health()
    );
    p
}

/// A plain connection (standing in for a Rails process, or for
/// inspection); its driver runs on a task.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}
