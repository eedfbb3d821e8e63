//! The pub/sub conformance suite: what every [`PubSub`] backend must do,
//! written once and run against each backend (in-memory, Redis, PostgreSQL)
//! by that backend's tests. Enabled by the `conformance` cargo feature.
//!
//! A backend's test supplies a [`Factory`]: each call returns one *instance*
//! of the backend, which the suite treats as one process. For networked
//! backends every call connects anew (instances share broadcasts through the
//! broker); for a single-process backend every call returns the same
//! instance. Each check subscribes on one instance and broadcasts from
//! another, so cross-process delivery is exercised wherever it exists.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keayl_cable::pubsub::{InMemory, PubSub};
//! use keayl_cable::pubsub::conformance::{self, Options};
//!
//! # async fn t() {
//! let shared: Arc<dyn PubSub> = Arc::new(InMemory::new());
//! let factory = move || {
//!     let p = shared.clone();
//!     async move { p }
//! };
//! conformance::run_all(&factory, &Options::in_process()).await;
//! # }
//! ```
//!
//! Every check uses fresh, unique stream names, so checks may run in
//! parallel against one shared broker (and next to unrelated traffic). A
//! failed check panics with a message saying what went wrong.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{BoxFuture, Callback, Delivery, PubSub, SubscriptionId};

/// Makes backend instances for the suite (see the module docs).
pub trait Factory: Send + Sync {
    /// One instance, ready for use (a networked backend may wait here until
    /// it is connected).
    fn instance(&self) -> BoxFuture<'static, Arc<dyn PubSub>>;
}

impl<F, Fut> Factory for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Arc<dyn PubSub>> + Send + 'static,
{
    fn instance(&self) -> BoxFuture<'static, Arc<dyn PubSub>> {
        Box::pin(self())
    }
}

/// What [`PubSub::subscriber_count`] counts for the backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Every subscription (the in-memory backend).
    Subscribers,
    /// Every instance (process) with at least one subscription: a broker's
    /// view, where a process holds one broker subscription per stream.
    Instances,
}

/// How the suite treats the backend under test.
#[derive(Debug, Clone)]
pub struct Options {
    /// What `subscriber_count` counts.
    pub counting: Counting,
    /// How long to wait for a delivery, a readiness or a count before
    /// failing. Default 5 s.
    pub timeout: Duration,
}

impl Options {
    /// A single-process backend: counts subscribers.
    pub fn in_process() -> Self {
        Options {
            counting: Counting::Subscribers,
            timeout: Duration::from_secs(5),
        }
    }

    /// A networked backend: counts instances.
    pub fn networked() -> Self {
        Options {
            counting: Counting::Instances,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Run every check in turn.
pub async fn run_all(factory: &impl Factory, options: &Options) {
    subscribe_broadcast_unsubscribe(factory, options).await;
    many_streams(factory, options).await;
    many_subscribers_per_stream(factory, options).await;
    large_and_non_ascii_payloads(factory, options).await;
    unusual_stream_names(factory, options).await;
    ordering_on_one_stream(factory, options).await;
    confirmation_after_acknowledgement(factory, options).await;
    subscriber_count(factory, options).await;
}

/// A stream name no other check (or process) uses: `keayl-conformance:<label>:<pid>:<n>:<nanos>`.
pub fn unique_stream(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "keayl-conformance:{label}:{}:{}:{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Collects every delivery made to its [`callback`](Self::callback).
#[derive(Clone, Default)]
pub struct Inbox {
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("len", &self.len()).finish()
    }
}

impl Inbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// A callback recording `(stream, message)` here.
    pub fn callback(&self) -> Callback {
        let got = self.got.clone();
        Arc::new(move |d: &Delivery| {
            got.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((d.stream().to_owned(), d.message().clone()))
        })
    }

    /// Messages received so far, in order.
    pub fn messages(&self) -> Vec<Bytes> {
        self.lock().iter().map(|(_, m)| m.clone()).collect()
    }

    /// Messages received so far as text (lossy), in order.
    pub fn texts(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    /// The stream of every message received so far.
    pub fn streams(&self) -> Vec<String> {
        self.lock().iter().map(|(s, _)| s.clone()).collect()
    }

    /// How many messages arrived.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing arrived.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget what arrived.
    pub fn clear(&self) {
        self.lock().clear()
    }

    /// Wait until at least `n` messages arrived, at most `timeout`; returns
    /// whether they did.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        eventually(timeout, || self.len() >= n).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Bytes)>> {
        self.got.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes;
/// returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Subscribe `inbox` to `stream` on `p` and wait until it is live.
pub async fn subscribe_live(
    p: &dyn PubSub,
    stream: &str,
    inbox: &Inbox,
    timeout: Duration,
) -> SubscriptionId {
    let sub = p.subscribe(stream, inbox.callback());
    match tokio::time::timeout(timeout, sub.ready).await {
        Ok(Ok(())) => sub.id,
        Ok(Err(e)) => panic!("subscription to {stream:?} failed: {e}"),
        Err(_) => panic!("subscription to {stream:?} not live after {timeout:?}"),
    }
}

async fn publish(p: &dyn PubSub, stream: &str, message: impl Into<Bytes>) {
    let message = message.into();
    if let Err(e) = p.broadcast(stream, message).await {
        panic!("broadcast on {stream:?} failed: {e}");
    }
}

fn same_instance(a: &Arc<dyn PubSub>, b: &Arc<dyn PubSub>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A JSON string literal of exactly `len` bytes (at least 2), made of
/// three-byte characters padded with ASCII.
pub fn json_text_of_len(len: usize) -> String {
    assert!(len >= 2);
    let mut s = String::with_capacity(len);
    s.push('"');
    let mut i = 0usize;
    while s.len() + 3 < len {
        s.push(['日', '本', '語', 'é'][i % 4]);
        i += 1;
    }
    while s.len() + 1 < len {
        s.push('a');
    }
    s.push('"');
    debug_assert_eq!(s.len(), len);
    s
}

/// Subscribe, receive (from another instance and from the subscriber's own),
/// unsubscribe (nothing more arrives), unsubscribe unknown ids, subscribe
/// again; a broadcast without subscribers succeeds.
pub async fn subscribe_broadcast_unsubscribe(factory: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("basic");
    let sentinel_stream = unique_stream("basic-sentinel");

    publish(&*b, &unique_stream("nobody-listens"), "\"into the void\"").await;

    let inbox = Inbox::new();
    let sentinel = Inbox::new();
    let id = subscribe_live(&*a, &stream, &inbox, t).await;
    let sentinel_id = subscribe_live(&*a, &sentinel_stream, &sentinel, t).await;

    publish(&*b, &stream, "\"one\"").await;
    assert!(
        inbox.wait_for(1, t).await,
        "the first broadcast did not arrive"
    );
    publish(&*a, &stream, "{\"n\":2}").await;
    assert!(
        inbox.wait_for(2, t).await,
        "a broadcast from the subscriber's own instance did not arrive"
    );
    assert_eq!(inbox.texts(), ["\"one\"", "{\"n\":2}"]);
    assert!(
        inbox.streams().iter().all(|s| *s == stream),
        "delivery names the wrong stream"
    );

    a.unsubscribe(id);
    a.unsubscribe(id); // twice: ignored
    a.unsubscribe(SubscriptionId(u64::MAX)); // unknown: ignored
    publish(&*b, &stream, "\"after unsubscribe\"").await;
    publish(&*b, &sentinel_stream, "\"sentinel\"").await;
    assert!(
        sentinel.wait_for(1, t).await,
        "the sentinel broadcast did not arrive"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        inbox.len(),
        2,
        "a broadcast arrived after unsubscribe: {:?}",
        inbox.texts()
    );

    let again = Inbox::new();
    let id = subscribe_live(&*a, &stream, &again, t).await;
    publish(&*b, &stream, "\"again\"").await;
    assert!(
        again.wait_for(1, t).await,
        "re-subscribing after unsubscribe did not work"
    );
    assert_eq!(again.texts(), ["\"again\""]);
    assert_eq!(inbox.len(), 2);

    a.unsubscribe(id);
    a.unsubscribe(sentinel_id);
}

/// 100 streams on one instance, one broadcast each from another: every
/// message reaches exactly its stream's subscriber.
pub async fn many_streams(factory: &impl Factory, options: &Options) {
    const N: usize = 100;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let base = unique_stream("many");
    let streams: Vec<String> = (0..N).map(|i| format!("{base}:{i}")).collect();
    let inboxes: Vec<Inbox> = (0..N).map(|_| Inbox::new()).collect();
    let subs: Vec<_> = streams
        .iter()
        .zip(&inboxes)
        .map(|(s, inbox)| a.subscribe(s, inbox.callback()))
        .collect();
    let ids: Vec<SubscriptionId> = subs.iter().map(|s| s.id).collect();
    let ready = futures_util::future::join_all(subs.into_iter().map(|s| s.ready));
    let results = tokio::time::timeout(t, ready)
        .await
        .unwrap_or_else(|_| panic!("{N} subscriptions not live after {t:?}"));
    for r in results {
        r.unwrap_or_else(|e| panic!("a subscription failed: {e}"));
    }
    for (i, s) in streams.iter().enumerate() {
        publish(&*b, s, format!("{{\"stream\":{i}}}")).await;
    }
    let all = eventually(t, || inboxes.iter().all(|i| !i.is_empty())).await;
    let missing: Vec<usize> = (0..N).filter(|&i| inboxes[i].is_empty()).collect();
    assert!(all, "streams without their message: {missing:?}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (i, inbox) in inboxes.iter().enumerate() {
        assert_eq!(
            inbox.texts(),
            [format!("{{\"stream\":{i}}}")],
            "stream {i} got the wrong messages"
        );
    }
    for id in ids {
        a.unsubscribe(id);
    }
}

/// 20 subscribers of one stream on each of two instances: each gets every
/// message once, in order.
pub async fn many_subscribers_per_stream(factory: &impl Factory, options: &Options) {
    const PER_INSTANCE: usize = 20;
    const MESSAGES: usize = 5;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("fan-out");
    let mut subs = Vec::new();
    for p in [&a, &b] {
        for _ in 0..PER_INSTANCE {
            let inbox = Inbox::new();
            let id = subscribe_live(&**p, &stream, &inbox, t).await;
            subs.push((p.clone(), id, inbox));
        }
    }
    for n in 0..MESSAGES {
        publish(&*a, &stream, format!("{n}")).await;
    }
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    let done = eventually(t, || subs.iter().all(|(_, _, i)| i.len() >= MESSAGES)).await;
    assert!(done, "not every subscriber got every message");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (k, (_, _, inbox)) in subs.iter().enumerate() {
        assert_eq!(
            inbox.texts(),
            expected,
            "subscriber {k} got the wrong messages"
        );
    }
    // Half of them leave; the rest still receive.
    for (p, id, _) in subs.iter().step_by(2) {
        p.unsubscribe(*id);
    }
    publish(&*b, &stream, "\"last\"").await;
    let done = eventually(t, || {
        subs.iter()
            .skip(1)
            .step_by(2)
            .all(|(_, _, i)| i.len() == MESSAGES + 1)
    })
    .await;
    assert!(
        done,
        "the remaining subscribers did not get the last message"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (_, _, inbox) in subs.iter().step_by(2) {
        assert_eq!(
            inbox.len(),
            MESSAGES,
            "an unsubscribed subscriber got the last message"
        );
    }
    for (p, id, _) in subs.iter().skip(1).step_by(2) {
        p.unsubscribe(*id);
    }
}

/// Non-ASCII text, JSON escapes, and payloads around PostgreSQL's 8,000-byte
/// NOTIFY limit up to 1 MiB arrive byte for byte, in order.
pub async fn large_and_non_ascii_payloads(factory: &impl Factory, options: &Options) {
    let t = options.timeout.max(Duration::from_secs(10));
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("payloads");
    let inbox = Inbox::new();
    let id = subscribe_live(&*a, &stream, &inbox, t).await;
    let mut payloads: Vec<String> = vec![
        "\"héllo wörld ☃ 日本語 🎉 Ωμέγα\"".into(),
        r#"{"text":"line 1\nline 2 \"quoted\" back\\slash \u0000 tab\t","emoji":"👩‍👩‍👧"}"#.into(),
        "\"\"".into(),
        "__keayl_large_payload:1".into(), // looks like a spill marker; must arrive verbatim
    ];
    for len in [
        7_990, 7_996, 7_997, 7_998, 7_999, 8_000, 8_001, 8_192, 65_536, 1_048_576,
    ] {
        payloads.push(json_text_of_len(len));
    }
    payloads.push("{\"small\":\"after the large ones\"}".into());
    for p in &payloads {
        publish(&*b, &stream, p.clone()).await;
    }
    assert!(
        inbox.wait_for(payloads.len(), t).await,
        "only {} of {} payloads arrived",
        inbox.len(),
        payloads.len()
    );
    let got = inbox.messages();
    assert_eq!(got.len(), payloads.len());
    for (i, (got, want)) in got.iter().zip(&payloads).enumerate() {
        assert!(
            got.as_ref() == want.as_bytes(),
            "payload {i} ({} bytes) arrived changed ({} bytes)",
            want.len(),
            got.len()
        );
    }
    a.unsubscribe(id);
}

/// Stream names that are long (over PostgreSQL's 63-byte identifiers, in
/// bytes and in characters), non-ASCII, or full of punctuation work, and
/// deliveries name the stream as subscribed.
pub async fn unusual_stream_names(factory: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let base = unique_stream("names");
    let pad = |s: String, len: usize, c: char| {
        let mut s = s;
        while s.len() + c.len_utf8() <= len {
            s.push(c);
        }
        s
    };
    let names = [
        format!("{base}:комната:日本語"),
        format!("{base}:with space \"quotes\" 'single' * ? [x] \\ %s"),
        pad(format!("{base}:"), 63, 'x'),
        pad(format!("{base}:"), 64, 'x'),
        pad(format!("{base}:"), 200, 'y'),
        // Under 63 characters but over 63 bytes.
        pad(format!("{base}:"), 90, 'ж'),
        format!("{base}:Gid://App/User/7"),
        format!("{base}:GID://APP/USER/7"), // case matters
    ];
    let inboxes: Vec<Inbox> = names.iter().map(|_| Inbox::new()).collect();
    let mut ids = Vec::new();
    for (n, inbox) in names.iter().zip(&inboxes) {
        ids.push(subscribe_live(&*a, n, inbox, t).await);
    }
    for (i, n) in names.iter().enumerate() {
        publish(&*b, n, format!("{i}")).await;
    }
    let done = eventually(t, || inboxes.iter().all(|i| !i.is_empty())).await;
    assert!(done, "a stream with an unusual name got nothing");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (i, (n, inbox)) in names.iter().zip(&inboxes).enumerate() {
        assert_eq!(
            inbox.texts(),
            [i.to_string()],
            "stream {n:?} got the wrong messages"
        );
        assert_eq!(
            inbox.streams(),
            std::slice::from_ref(n),
            "delivery on {n:?} names another stream"
        );
    }
    for id in ids {
        a.unsubscribe(id);
    }
}

/// 300 broadcasts on one stream from one task arrive in order at
/// subscribers on two instances.
pub async fn ordering_on_one_stream(factory: &impl Factory, options: &Options) {
    const N: usize = 300;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("order");
    let on_a = Inbox::new();
    let on_b = Inbox::new();
    let id_a = subscribe_live(&*a, &stream, &on_a, t).await;
    let id_b = subscribe_live(&*b, &stream, &on_b, t).await;
    for n in 0..N {
        publish(&*b, &stream, format!("{n}")).await;
    }
    let expected: Vec<String> = (0..N).map(|n| n.to_string()).collect();
    for (name, inbox) in [
        ("the other instance", &on_a),
        ("the publishing instance", &on_b),
    ] {
        assert!(
            inbox.wait_for(N, t).await,
            "{name} got {} of {N} messages",
            inbox.len()
        );
        assert_eq!(
            inbox.texts(),
            expected,
            "{name} got the messages out of order"
        );
    }
    a.unsubscribe(id_a);
    b.unsubscribe(id_b);
}

/// Once a subscription's `ready` completed, a broadcast from any instance
/// reaches it — repeatedly, on fresh streams, with no delay in between.
/// Also: a second local subscriber of a live stream is live too, and
/// unsubscribing before `ready` completes leaves nothing behind.
pub async fn confirmation_after_acknowledgement(factory: &impl Factory, options: &Options) {
    const ROUNDS: usize = 20;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    for round in 0..ROUNDS {
        let stream = unique_stream("ack");
        let inbox = Inbox::new();
        let id = subscribe_live(&*a, &stream, &inbox, t).await;
        publish(&*b, &stream, format!("{round}")).await;
        let second = Inbox::new();
        let id2 = subscribe_live(&*a, &stream, &second, t).await;
        publish(&*b, &stream, "\"second\"").await;
        assert!(
            inbox.wait_for(2, t).await && second.wait_for(1, t).await,
            "round {round}: a broadcast right after the subscription went live was lost (first got {:?}, second got {:?})",
            inbox.texts(),
            second.texts()
        );
        assert_eq!(inbox.texts(), [round.to_string(), "\"second\"".into()]);
        // A broadcast still in flight when the second subscriber joined may
        // reach it too; what was published after it went live must.
        let got = second.texts();
        assert!(
            got == ["\"second\""] || got == [round.to_string(), "\"second\"".into()],
            "round {round}: the second subscriber got {got:?}"
        );
        a.unsubscribe(id);
        a.unsubscribe(id2);
    }

    // Unsubscribe before the subscription is live: no leak, no delivery.
    let stream = unique_stream("ack-cancelled");
    let inbox = Inbox::new();
    let sub = a.subscribe(&stream, inbox.callback());
    a.unsubscribe(sub.id);
    let _ = tokio::time::timeout(t, sub.ready).await; // either outcome is fine
    let check = Inbox::new();
    let other = unique_stream("ack-check");
    let check_id = subscribe_live(&*a, &other, &check, t).await;
    publish(&*b, &stream, "\"nobody\"").await;
    publish(&*b, &other, "\"check\"").await;
    assert!(check.wait_for(1, t).await);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        inbox.is_empty(),
        "a subscription cancelled before it was live got a message"
    );
    a.unsubscribe(check_id);
}

/// `subscriber_count` is 0 for an unknown stream, counts subscribers as the
/// backend defines ([`Counting`]), and returns to 0 after everyone left.
pub async fn subscriber_count(factory: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("count");
    let count = |p: Arc<dyn PubSub>, s: String| async move {
        p.subscriber_count(&s)
            .await
            .unwrap_or_else(|e| panic!("subscriber_count failed: {e}"))
    };
    assert_eq!(
        count(a.clone(), stream.clone()).await,
        0,
        "count of a fresh stream"
    );

    let inbox = Inbox::new();
    let a1 = subscribe_live(&*a, &stream, &inbox, t).await;
    let a2 = subscribe_live(&*a, &stream, &inbox, t).await;
    let b1 = subscribe_live(&*b, &stream, &inbox, t).await;
    let expected = match options.counting {
        Counting::Subscribers => 3,
        Counting::Instances if same_instance(&a, &b) => 1,
        Counting::Instances => 2,
    };
    for p in [&a, &b] {
        let mut last = usize::MAX;
        let ok = eventually_async(
            t,
            || {
                let p = p.clone();
                let s = stream.clone();
                async move { count(p, s).await }
            },
            |n| {
                last = n;
                n == expected
            },
        )
        .await;
        assert!(
            ok,
            "subscriber_count is {last}, expected {expected} ({:?})",
            options.counting
        );
    }

    a.unsubscribe(a1);
    let expected_after = match options.counting {
        Counting::Subscribers => 2,
        _ => expected,
    };
    let mut last = usize::MAX;
    let ok = eventually_async(
        t,
        || count(b.clone(), stream.clone()),
        |n| {
            last = n;
            n == expected_after
        },
    )
    .await;
    assert!(
        ok,
        "after one unsubscribe: {last}, expected {expected_after}"
    );

    a.unsubscribe(a2);
    b.unsubscribe(b1);
    let mut last = usize::MAX;
    let ok = eventually_async(
        t,
        || count(a.clone(), stream.clone()),
        |n| {
            last = n;
            n == 0
        },
    )
    .await;
    assert!(ok, "after everyone left: {last}, expected 0");
}

async fn eventually_async<T, Fut>(
    timeout: Duration,
    mut probe: impl FnMut() -> Fut,
    mut accept: impl FnMut(T) -> bool,
) -> bool
where
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if accept(probe().await) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_lengths_are_exact() {
        for len in [2, 3, 4, 5, 7_999, 8_000, 8_001] {
            let s = json_text_of_len(len);
            assert_eq!(s.len(), len);
            assert!(s.starts_with('"') && s.ends_with('"'));
        }
    }

    #[test]
    fn unique_streams_differ() {
        assert_ne!(unique_stream("x"), unique_stream("x"));
    }
}
