//! The shared fault checks (`keayl-cable/tests/support/faults.rs`) against
//! a `nats-server` each test starts on its own port.

mod common;

use common::Nats;
use common::faults;

#[tokio::test]
async fn kill_and_restart_resubscribes_and_reports_the_outage() {
    faults::kill_and_restart::<Nats>().await;
}

#[tokio::test]
async fn a_frozen_broker_is_detected_by_the_health_check() {
    faults::frozen_broker::<Nats>().await;
}

#[tokio::test]
async fn starting_without_a_broker_then_it_appears() {
    faults::starting_without_a_broker::<Nats>().await;
}

#[tokio::test]
async fn dropping_the_backend_ends_its_task_and_connections() {
    faults::dropping_closes_connections::<Nats>().await;
}

#[tokio::test]
async fn shutdown_fails_pending_and_later_subscriptions() {
    faults::shutdown_fails_subscriptions::<Nats>().await;
}
