//! Operations endpoints: Prometheus metrics and a health check.
//!
//! [`ops_router`] serves `GET /metrics` (Prometheus text format, rendered by
//! `metrics-exporter-prometheus`) and `GET /health` (200 while the pub/sub
//! backend is healthy, 503 while its broker is down — the path AnyCable
//! uses).
//!
//! Hot counters live in plain atomics ([`SocketStats`](keayl_cable::socket::SocketStats), the
//! backends' [`PubSubStats`]); a scrape copies them into a Prometheus
//! recorder of its own and renders it, so the fan-out path never touches
//! the metrics registry.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keayl_cable::pubsub::PubSubStats;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::cable::CableServer;
use crate::listener::{ListenerSnapshot, ListenerStats};

struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        Exporter { recorder, handle }
    })
}

fn describe() {
    describe_gauge!("keayl_connections", "Open WebSocket connections");
    describe_counter!("keayl_connections_total", "WebSocket connections accepted");
    describe_gauge!(
        "keayl_subscriptions",
        "Local pub/sub subscriptions (channel streams and internal streams)"
    );
    describe_gauge!(
        "keayl_streams",
        "Streams with at least one local subscriber"
    );
    describe_counter!(
        "keayl_broadcasts_total",
        "Broadcasts dispatched to local subscribers"
    );
    describe_counter!(
        "keayl_deliveries_total",
        "Deliveries of broadcasts to local subscribers"
    );
    describe_counter!(
        "keayl_slow_disconnects_total",
        "Clients disconnected for being too slow"
    );
    describe_counter!(
        "keayl_dropped_frames_total",
        "Frames dropped under the drop-newest policy"
    );
    describe_counter!(
        "keayl_command_errors_total",
        "Client commands that failed (logged, no frame), by kind"
    );
    describe_counter!(
        "keayl_refused_total",
        "Refused upgrades (origin, limit, not a WebSocket)"
    );
    describe_counter!(
        "keayl_oversize_total",
        "Client messages over the size limit"
    );
    describe_counter!(
        "keayl_liveness_timeouts_total",
        "Connections closed because the client stopped answering"
    );
    describe_counter!(
        "keayl_command_overflows_total",
        "Clients disconnected because their command queue overflowed"
    );
    describe_counter!(
        "keayl_invalid_utf8_total",
        "Text frames that were not UTF-8 (closed with 1007)"
    );
    describe_counter!(
        "keayl_handshake_timeouts_total",
        "Upgrades or connects that took longer than the handshake timeout"
    );
    describe_gauge!(
        "keayl_outbound_queue_bytes",
        Unit::Bytes,
        "Bytes queued for clients, all connections"
    );
    describe_gauge!("keayl_broker_up", "1 while the pub/sub broker is reachable");
    describe_counter!(
        "keayl_broker_reconnects_total",
        "Reconnections to the pub/sub broker"
    );
    describe_counter!(
        "keayl_lost_broadcasts_total",
        "Broadcasts that could not be published (broker down)"
    );
    describe_gauge!(
        "keayl_history_streams",
        "Streams with a history held in this process"
    );
    describe_gauge!(
        "keayl_history_entries",
        "Messages of stream history held in this process"
    );
    describe_gauge!(
        "keayl_history_bytes",
        Unit::Bytes,
        "Bytes of stream history held in this process (payloads plus bookkeeping)"
    );
    describe_counter!(
        "keayl_history_evicted_total",
        "History messages evicted before their time (per-stream limit or process budget)"
    );
    describe_counter!(
        "keayl_history_served_total",
        "History requests answered with confirm_history"
    );
    describe_counter!(
        "keayl_history_rejected_total",
        "History requests answered with reject_history: gaps clients were told about"
    );
    describe_counter!(
        "keayl_sessions_restored_total",
        "Sessions restored from a client's sid"
    );
    describe_gauge!(
        "keayl_sessions",
        "Session snapshots held in this process (zero when they live in the broker)"
    );
    describe_gauge!("keayl_runtime_alive_tasks", "Live Tokio tasks");
    describe_gauge!(
        "keayl_http_connections",
        "Open TCP connections on a regular place of the listener's budget (every kind)"
    );
    describe_gauge!(
        "keayl_http_ops_connections",
        "Open TCP connections on an ops place (health and metrics only)"
    );
    describe_counter!("keayl_http_accepted_total", "TCP connections accepted");
    describe_counter!(
        "keayl_http_refused_total",
        "TCP connections refused with 503: the whole budget was taken"
    );
    describe_counter!(
        "keayl_http_ops_only_refusals_total",
        "Requests on an ops place for a non-ops path (503)"
    );
    describe_counter!(
        "keayl_http_header_timeouts_total",
        "Connections closed because headers did not arrive in time (idle keep-alive included)"
    );
    describe_counter!(
        "keayl_http_body_timeouts_total",
        "Request bodies that stalled past the body-read timeout"
    );
    describe_counter!(
        "keayl_http_client_stalls_total",
        "HTTP connections cut because the client stopped reading"
    );
    describe_counter!(
        "keayl_http_accept_errors_total",
        "accept() errors (file descriptors exhausted)"
    );
}

/// The Prometheus text for `servers` (several mounts of one process share
/// their backend; connection counters are summed) and, when given, the
/// HTTP listener's counters.
pub fn render(servers: &[CableServer], listener: Option<&ListenerStats>) -> String {
    let ex = exporter();
    metrics::with_local_recorder(&ex.recorder, || {
        if let Some(l) = listener {
            render_listener(l.snapshot());
        }
        let mut pubsub = PubSubStats::default();
        let (mut served, mut rejected, mut restored, mut presence) = (0u64, 0u64, 0u64, 0usize);
        let (
            mut conns,
            mut total,
            mut slow,
            mut dropped,
            mut refused,
            mut oversize,
            mut liveness,
            mut queued,
        ) = (0usize, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0usize);
        let (mut overflows, mut invalid_utf8, mut handshake) = (0u64, 0u64, 0u64);
        let mut errors: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for (i, s) in servers.iter().enumerate() {
            let st = s.stats();
            conns += st.connections.load(Ordering::Relaxed);
            total += st.connections_total.load(Ordering::Relaxed);
            slow += st.slow_disconnects.load(Ordering::Relaxed);
            dropped += st.dropped_frames.load(Ordering::Relaxed);
            refused += st.refused.load(Ordering::Relaxed);
            oversize += st.oversize.load(Ordering::Relaxed);
            liveness += st.liveness_timeouts.load(Ordering::Relaxed);
            queued += st.queued_bytes.load(Ordering::Relaxed);
            overflows += st.command_overflows.load(Ordering::Relaxed);
            invalid_utf8 += st.invalid_utf8.load(Ordering::Relaxed);
            handshake += st.handshake_timeouts.load(Ordering::Relaxed);
            for (k, v) in st.command_errors_by_kind() {
                *errors.entry(k).or_default() += v;
            }
            if i == 0 {
                pubsub = s.cable().pubsub().stats();
                served = s.cable().served_history();
                rejected = s.cable().rejected_history();
                restored = s.cable().restored_sessions();
                presence = s.cable().presence_sessions();
            }
        }
        gauge!("keayl_connections").set(conns as f64);
        counter!("keayl_connections_total").absolute(total);
        gauge!("keayl_subscriptions").set(pubsub.subscriptions as f64);
        gauge!("keayl_streams").set(pubsub.streams as f64);
        counter!("keayl_broadcasts_total").absolute(pubsub.broadcasts);
        counter!("keayl_deliveries_total").absolute(pubsub.deliveries);
        counter!("keayl_slow_disconnects_total").absolute(slow);
        counter!("keayl_dropped_frames_total").absolute(dropped);
        counter!("keayl_refused_total").absolute(refused);
        counter!("keayl_oversize_total").absolute(oversize);
        counter!("keayl_liveness_timeouts_total").absolute(liveness);
        counter!("keayl_command_overflows_total").absolute(overflows);
        counter!("keayl_invalid_utf8_total").absolute(invalid_utf8);
        counter!("keayl_handshake_timeouts_total").absolute(handshake);
        for (kind, n) in errors {
            counter!("keayl_command_errors_total", "kind" => kind).absolute(n);
        }
        gauge!("keayl_outbound_queue_bytes").set(queued as f64);
        gauge!("keayl_broker_up").set(if pubsub.healthy { 1.0 } else { 0.0 });
        counter!("keayl_broker_reconnects_total").absolute(pubsub.reconnects);
        counter!("keayl_lost_broadcasts_total").absolute(pubsub.lost_broadcasts);
        gauge!("keayl_history_streams").set(pubsub.history.streams as f64);
        gauge!("keayl_history_entries").set(pubsub.history.entries as f64);
        gauge!("keayl_history_bytes").set(pubsub.history.bytes as f64);
        counter!("keayl_history_evicted_total").absolute(pubsub.history.evicted);
        counter!("keayl_history_served_total").absolute(served);
        counter!("keayl_history_rejected_total").absolute(rejected);
        counter!("keayl_sessions_restored_total").absolute(restored);
        gauge!("keayl_sessions").set(pubsub.sessions as f64);
        gauge!("keayl_presence_sessions").set(presence as f64);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            gauge!("keayl_runtime_alive_tasks").set(rt.metrics().num_alive_tasks() as f64);
        }
    });
    ex.handle.render()
}

fn render_listener(l: ListenerSnapshot) {
    gauge!("keayl_http_connections").set(l.open as f64);
    gauge!("keayl_http_ops_connections").set(l.ops_open as f64);
    counter!("keayl_http_accepted_total").absolute(l.accepted);
    counter!("keayl_http_refused_total").absolute(l.refused);
    counter!("keayl_http_ops_only_refusals_total").absolute(l.ops_only_refusals);
    counter!("keayl_http_header_timeouts_total").absolute(l.header_timeouts);
    counter!("keayl_http_body_timeouts_total").absolute(l.body_timeouts);
    counter!("keayl_http_client_stalls_total").absolute(l.client_stalls);
    counter!("keayl_http_accept_errors_total").absolute(l.accept_errors);
}

/// `GET /metrics` and `GET /health` for `servers` (the first one's pub/sub
/// decides health) and, when given, the listener serving them (its
/// connection budget and timeouts appear in `/metrics`).
pub fn ops_router<S>(servers: Vec<CableServer>, listener: Option<ListenerStats>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let ops = std::sync::Arc::new(Ops { servers, listener });
    let for_health = ops.clone();
    Router::new()
        .route("/metrics", get(move || metrics_handler(ops.clone())))
        .route("/health", get(move || health_handler(for_health.clone())))
}

struct Ops {
    servers: Vec<CableServer>,
    listener: Option<ListenerStats>,
}

async fn metrics_handler(ops: std::sync::Arc<Ops>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&ops.servers, ops.listener.as_ref()),
    )
        .into_response()
}

async fn health_handler(ops: std::sync::Arc<Ops>) -> Response {
    let healthy = ops
        .servers
        .first()
        .map(|s| s.cable().pubsub().stats().healthy)
        .unwrap_or(true);
    if healthy {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "pub/sub broker unavailable",
        )
            .into_response()
    }
}
