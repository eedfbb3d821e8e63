//! Helpers shared by the PostgreSQL integration tests.

#![allow(dead_code)]

#[path = "../../../keayl-cable/tests/support/faults.rs"]
pub mod faults;
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
    faults::fast(&mut c);
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

impl faults::PrivateBroker for PrivatePostgres {
    fn start_on(port: u16) -> Option<Self> {
        PrivatePostgres::start_on(port)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn kill(&mut self) {
        PrivatePostgres::kill(self)
    }
    fn restart(&mut self) {
        PrivatePostgres::restart(self)
    }
    fn freeze(&self) {
        // PostgreSQL serves each connection from its own process: the
        // PostgreSQL tests freeze the listener's backend ([`Frozen`]).
        unimplemented!("freeze one backend process with Frozen")
    }
    fn thaw(&self) {}
    async fn connected_clients(&self) -> usize {
        let client = raw_client(&self.url()).await;
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) as usize
    }
}

/// The PostgreSQL backend under the shared fault checks.
pub struct Postgres;

impl faults::TestBackend for Postgres {
    type Client = keayl_postgres::PostgresClient;
    type Broker = PrivatePostgres;
    const CONNECTIONS: usize = 1;
    const STARTUP: Duration = Duration::from_secs(10);

    fn url(port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    fn config(url: &str, tweak: &dyn Fn(&mut keayl_broker::BrokerConfig)) -> PostgresConfig {
        let mut c = fast_config(url);
        tweak(&mut c);
        c
    }
}
