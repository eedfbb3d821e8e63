//! The pub/sub conformance suite: what every [`PubSub`] backend must do,
//! written once and run against each backend (in-memory, `External` over an
//! in-process broker, Redis, PostgreSQL, NATS) by that backend's tests.
//! Enabled by the `conformance` cargo feature.
//!
//! # Running the suite on a backend
//!
//! A backend's test file supplies a [`Factory`] and [`Options`] and invokes
//! [`conformance_tests!`] once, at module level. The macro expands to one
//! `#[tokio::test]` per check in [`CHECKS`] (each named after its check),
//! so a backend cannot forget a check, and a check added here runs on every
//! backend without touching their test files. A networked backend's
//! `tests/conformance.rs` looks like this (Redis' and PostgreSQL's do):
//!
//! ```text
//! use keayl_cable::pubsub::conformance::{Factory, Options, conformance_tests};
//!
//! fn factory(prefix: Option<&'static str>) -> impl Factory {
//!     move || async move {
//!         let mut config = keayl_nats::config_from_url(&nats_url()).unwrap();
//!         config.channel_prefix = prefix.map(str::to_owned);
//!         Arc::new(connected(config).await) as Arc<dyn PubSub>
//!     }
//! }
//!
//! conformance_tests! {
//!     factory: factory(None),
//!     options: Options::networked(),
//!     run_if: require_nats(), // false: SKIPPED notice; panics under KEAYL_REQUIRE_SERVICES=1
//! }
//!
//! // The backend's own tests follow, as ordinary #[tokio::test]s.
//! ```
//!
//! The in-memory backend, where every instance is the same one:
//!
//! ```no_run
//! use std::sync::Arc;
//! use keayl_cable::pubsub::conformance::{Factory, Options, conformance_tests};
//! use keayl_cable::pubsub::{InMemory, PubSub};
//!
//! fn factory() -> impl Factory {
//!     let shared: Arc<dyn PubSub> = Arc::new(InMemory::new());
//!     move || {
//!         let p = shared.clone();
//!         async move { p }
//!     }
//! }
//!
//! conformance_tests! {
//!     factory: factory(),
//!     options: Options::in_process(),
//! }
//! # fn main() {}
//! ```
//!
//! * `factory:` an expression evaluating to an `impl` [`Factory`]; evaluated
//!   anew inside every test, so each check gets fresh instances.
//! * `options:` an expression evaluating to [`Options`], likewise.
//! * `run_if:` (optional) a `bool` expression evaluated first in every test;
//!   `false` skips the check (the test returns early and passes). Use it for
//!   "is the server up" guards that print a loud SKIPPED notice (and panic
//!   under `KEAYL_REQUIRE_SERVICES=1`).
//!
//! The tests are generated in the module where the macro is invoked, so
//! invoke it once per module (wrap each backend or configuration in its own
//! `mod` to run several in one file), and define no functions named after
//! checks next to it. The test file needs `tokio` (features `macros` and
//! `rt-multi-thread`) as a dev-dependency: some checks run on a
//! multi-threaded runtime. Backend-specific tests go next to the invocation
//! as ordinary tests.
//!
//! A single check can also be called directly
//! (`conformance::many_streams(&factory, &options).await`), and [`run_all`]
//! runs every check in turn in one test, e.g. for a second configuration
//! of the same backend.
//!
//! # Instances
//!
//! Each call of the [`Factory`] returns one *instance* of the backend, which
//! the suite treats as one process. For networked backends every call
//! connects anew (instances share broadcasts through the broker); for a
//! single-process backend every call returns the same instance. Checks
//! subscribe on one instance and broadcast from another, so cross-process
//! delivery is exercised wherever it exists.
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
//! # What differs between backends
//!
//! [`Options`] says what the suite may expect: what
//! [`subscriber_count`](PubSub::subscriber_count) counts ([`Counting`]),
//! whether delivery happens inside `broadcast` ([`Options::synchronous`]:
//! the checks that need it return at once for other backends), and how long
//! to wait. [`Options::in_process`] and [`Options::networked`] cover the
//! usual cases; adjust fields for the rest (`External` over an in-process
//! broker counts instances but delivers synchronously).
//!
//! # Writing checks
//!
//! Every check uses fresh, unique stream names ([`unique_stream`]), so
//! checks may run in parallel against one shared broker (and next to
//! unrelated traffic). A failed check panics with a message saying what went
//! wrong. A new check is a `pub async fn name(factory: &impl Factory,
//! options: &Options)` with rustdoc, added to the one list of checks at the
//! top of the definition of [`conformance_tests!`] (with the arguments its
//! `#[tokio::test]` needs, usually none); [`CHECKS`] and [`run_all`] are
//! made from that list too. A check that only makes sense for some backends
//! reads [`Options`] (returning at once when it does not apply); a new
//! difference between backends is a new `Options` field, set by
//! [`Options::in_process`] and [`Options::networked`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;

use super::{
    BoxFuture, Callback, Delivery, HistoryError, HistoryFrom, Position, PubSub, SubscriptionId,
};
use crate::protocol::EncodedIdentifier;

/// Defines one `#[tokio::test]` per conformance check (named after the
/// check: see [`CHECKS`]); see the
/// [module docs](crate::pubsub::conformance#running-the-suite-on-a-backend).
/// The arms starting with `@` are internal.
///
/// ```text
/// conformance_tests! {
///     factory: <expr: impl Factory>,
///     options: <expr: Options>,
///     run_if: <expr: bool>,   // optional; false skips every check
/// }
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __keayl_pubsub_conformance_tests {
    (factory: $factory:expr, options: $options:expr, run_if: $run_if:expr $(,)?) => {
        $crate::__keayl_pubsub_conformance_tests! { @checks tests [$factory, $options, $run_if] }
    };
    (factory: $factory:expr, options: $options:expr $(,)?) => {
        $crate::__keayl_pubsub_conformance_tests! { @checks tests [$factory, $options, true] }
    };
    // The one list of checks, in `run_all` order, each with the arguments of
    // its `#[tokio::test]`. `CHECKS`, `run_all` and the tests come from here.
    (@checks $mode:ident $args:tt) => {
        $crate::__keayl_pubsub_conformance_tests! { @$mode $args
            subscribe_broadcast_unsubscribe(),
            many_streams(),
            many_subscribers_per_stream(),
            large_and_non_ascii_payloads(),
            unusual_stream_names(),
            ordering_on_one_stream(),
            confirmation_after_acknowledgement(),
            subscriber_count(),
            concurrent_broadcasting(flavor = "multi_thread", worker_threads = 4),
            unsubscribe_inside_a_callback_stops_later_callbacks(),
            deliveries_share_encoded_frames(),
            synchronous_delivery(),
            reentrant_callbacks(),
            history_positions_and_reads(),
            sessions_are_shared(),
            presence_is_shared(),
        }
    };
    (@tests [$factory:expr, $options:expr, $run_if:expr] $($name:ident($($test:tt)*)),* $(,)?) => {
        $(
            #[::tokio::test($($test)*)]
            async fn $name() {
                if !$run_if {
                    return;
                }
                let factory = $factory;
                let options = $options;
                $crate::pubsub::conformance::$name(&factory, &options).await;
            }
        )*
    };
    (@names [] $($name:ident($($test:tt)*)),* $(,)?) => {
        [$(::core::stringify!($name)),*]
    };
    (@run_all [$factory:expr, $options:expr] $($name:ident($($test:tt)*)),* $(,)?) => {
        $($crate::pubsub::conformance::$name($factory, $options).await;)*
    };
}

#[doc(inline)]
pub use crate::__keayl_pubsub_conformance_tests as conformance_tests;

/// The names of every check, in [`run_all`] order: the tests
/// [`conformance_tests!`] defines.
pub const CHECKS: &[&str] = &crate::__keayl_pubsub_conformance_tests!(@checks names []);

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
    /// Whether the backend works in line, within the calling task: a
    /// `broadcast` has called every subscriber's callback, in every
    /// instance, by the time its future completes (on its first poll);
    /// `ready` completes within a few polls without a runtime (no timers,
    /// no I/O); `subscriber_count` is exact as soon as `ready` completed or
    /// `unsubscribe` returned. True for [`InMemory`](super::InMemory) and
    /// for [`External`](super::External) over an in-process client that
    /// delivers in line (keayl-cable's tests' `FakeBroker`); false for
    /// networked backends. When true, the suite asserts these right
    /// away instead of waiting, and also runs [`synchronous_delivery`] and
    /// [`reentrant_callbacks`] (which return at once otherwise).
    pub synchronous: bool,
    /// How long to wait for a delivery, a readiness or a count before
    /// failing. Default 5 s.
    pub timeout: Duration,
    /// Whether the backend keeps stream history with the defaults
    /// ([`HistoryConfig::default`](super::HistoryConfig)), shared by every
    /// instance: [`history_positions_and_reads`] checks it (and, when
    /// false, that the backend says so).
    pub history: bool,
    /// Whether the backend keeps session snapshots shared by every
    /// instance: [`sessions_are_shared`] checks it (and, when false, that
    /// nothing is restored).
    pub sessions: bool,
    /// Whether the backend keeps presence sets shared by every instance:
    /// [`presence_is_shared`] checks it (and, when false, that the backend
    /// says [`PresenceError::Unsupported`](super::PresenceError::Unsupported)).
    pub presence: bool,
}

impl Options {
    /// A single-process backend: counts subscribers, delivers synchronously.
    pub fn in_process() -> Self {
        Options {
            counting: Counting::Subscribers,
            synchronous: true,
            timeout: Duration::from_secs(5),
            history: true,
            sessions: true,
            presence: true,
        }
    }

    /// A networked backend: counts instances, delivers asynchronously.
    pub fn networked() -> Self {
        Options {
            counting: Counting::Instances,
            synchronous: false,
            timeout: Duration::from_secs(5),
            history: false,
            sessions: false,
            presence: false,
        }
    }
}

/// Run every check in turn (the order of [`CHECKS`]).
pub async fn run_all(factory: &impl Factory, options: &Options) {
    crate::__keayl_pubsub_conformance_tests!(@checks run_all [factory, options]);
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

/// One delivery an [`Inbox`] got: stream, message, position.
type Got = (String, Bytes, Option<Position>);

/// Collects every delivery made to its [`callback`](Self::callback).
#[derive(Clone, Default)]
pub struct Inbox {
    got: Arc<Mutex<Vec<Got>>>,
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
            got.lock().unwrap_or_else(|e| e.into_inner()).push((
                d.stream().to_owned(),
                d.message().clone(),
                d.position().cloned(),
            ))
        })
    }

    /// Messages received so far, in order.
    pub fn messages(&self) -> Vec<Bytes> {
        self.lock().iter().map(|(_, m, _)| m.clone()).collect()
    }

    /// Messages received so far as text (lossy), in order.
    pub fn texts(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(_, m, _)| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    /// The stream of every message received so far.
    pub fn streams(&self) -> Vec<String> {
        self.lock().iter().map(|(s, _, _)| s.clone()).collect()
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

    /// The positions of the messages received so far, in order.
    pub fn positions(&self) -> Vec<Option<Position>> {
        self.lock().iter().map(|(_, _, p)| p.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Got>> {
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

/// Processes with different channel prefixes (Rails' `channel_prefix`: two
/// apps sharing one broker) do not hear each other: `plain` makes instances
/// without a prefix, `prefixed` with one. Not in [`run_all`]: it needs a
/// second factory.
pub async fn prefixes_do_not_mix(plain: &impl Factory, prefixed: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = plain.instance().await;
    let b = prefixed.instance().await;
    let stream = unique_stream("prefix-isolation");
    let got = Inbox::new();
    let id = subscribe_live(&*a, &stream, &got, t).await;
    b.broadcast(&stream, "\"other app\"".into())
        .await
        .unwrap_or_else(|e| panic!("broadcast failed: {e}"));
    a.broadcast(&stream, "\"same app\"".into())
        .await
        .unwrap_or_else(|e| panic!("broadcast failed: {e}"));
    assert!(
        got.wait_for(1, t).await,
        "the unprefixed broadcast was lost"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        got.texts(),
        ["\"same app\""],
        "a prefixed process reached an unprefixed one"
    );
    a.unsubscribe(id);
}

/// Subscribe `inbox` to `stream` on `p` and wait until it is live.
pub async fn subscribe_live(
    p: &dyn PubSub,
    stream: &str,
    inbox: &Inbox,
    timeout: Duration,
) -> SubscriptionId {
    subscribe_callback_live(p, stream, inbox.callback(), timeout).await
}

/// Subscribe `callback` to `stream` on `p` and wait until it is live.
async fn subscribe_callback_live(
    p: &dyn PubSub,
    stream: &str,
    callback: Callback,
    timeout: Duration,
) -> SubscriptionId {
    let sub = p.subscribe(stream, callback);
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

/// The subscriber count of `stream` on `p`; panics when the backend fails.
async fn count_of(p: Arc<dyn PubSub>, stream: String) -> usize {
    p.subscriber_count(&stream)
        .await
        .unwrap_or_else(|e| panic!("subscriber_count of {stream:?} failed: {e}"))
}

/// Assert that `subscriber_count(stream)` on `p` is `expected`: right away
/// for a [synchronous](Options::synchronous) backend, within the timeout
/// otherwise.
async fn expect_count(
    p: &Arc<dyn PubSub>,
    stream: &str,
    expected: usize,
    options: &Options,
    what: &str,
) {
    if options.synchronous {
        let n = count_of(p.clone(), stream.to_owned()).await;
        assert_eq!(
            n, expected,
            "{what}: subscriber_count is {n} right away, expected {expected} ({:?}, synchronous)",
            options.counting
        );
        return;
    }
    let mut last = usize::MAX;
    let ok = eventually_async(
        options.timeout,
        || count_of(p.clone(), stream.to_owned()),
        |n| {
            last = n;
            n == expected
        },
    )
    .await;
    assert!(
        ok,
        "{what}: subscriber_count is {last}, expected {expected} ({:?})",
        options.counting
    );
}

/// Drive `fut` with a no-op waker, as a synchronous backend allows (see
/// [`Options::synchronous`]); panics when it is not done after 100 polls.
fn poll_to_completion<F: Future>(fut: F, what: &str) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..100 {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("{what} did not complete without a runtime (the backend is not synchronous)");
}

/// Await a spawned task, re-raising its panic (with its message).
async fn join(handle: tokio::task::JoinHandle<()>) {
    if let Err(e) = handle.await {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a task of the check did not finish: {e}"),
        }
    }
}

/// Subscribe, receive (from another instance and from the subscriber's own,
/// and nothing broadcast on another stream), unsubscribe (nothing more
/// arrives), unsubscribe unknown ids, subscribe again; a broadcast without
/// subscribers succeeds.
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

    // Not for this subscriber: checked by the exact contents below.
    publish(&*b, &unique_stream("basic-other"), "\"not for me\"").await;
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
        "a broadcast arrived after unsubscribe (or one on another stream): {:?}",
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

/// 200 streams on one instance, one broadcast each from another (in reverse
/// order): every message reaches exactly its stream's subscriber, naming
/// that stream.
pub async fn many_streams(factory: &impl Factory, options: &Options) {
    const N: usize = 200;
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
    for (i, s) in streams.iter().enumerate().rev() {
        publish(&*b, s, format!("{{\"stream\":{i}}}")).await;
    }
    let all = eventually(t, || inboxes.iter().all(|i| !i.is_empty())).await;
    let missing: Vec<usize> = (0..N).filter(|&i| inboxes[i].is_empty()).collect();
    assert!(all, "streams without their message: {missing:?}");
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (i, (s, inbox)) in streams.iter().zip(&inboxes).enumerate() {
        assert_eq!(
            inbox.texts(),
            [format!("{{\"stream\":{i}}}")],
            "stream {i} got the wrong messages"
        );
        assert_eq!(
            inbox.streams(),
            std::slice::from_ref(s),
            "the delivery on stream {i} names another stream"
        );
    }
    for id in ids {
        a.unsubscribe(id);
    }
}

/// 100 subscribers of one stream on each of two instances: each gets every
/// message once, in order.
pub async fn many_subscribers_per_stream(factory: &impl Factory, options: &Options) {
    const PER_INSTANCE: usize = 100;
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

/// Non-ASCII text (including U+2028/U+2029), JSON escapes, bytes that are
/// not UTF-8 (payloads are opaque bytes to a backend), and payloads around
/// PostgreSQL's 8,000-byte NOTIFY limit up to 1 MiB arrive byte for byte, in
/// order.
pub async fn large_and_non_ascii_payloads(factory: &impl Factory, options: &Options) {
    let t = options.timeout.max(Duration::from_secs(10));
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("payloads");
    let inbox = Inbox::new();
    let id = subscribe_live(&*a, &stream, &inbox, t).await;
    let mut payloads: Vec<Bytes> = vec![
        Bytes::from_static("\"héllo wörld ☃ 日本語 🎉 Ωμέγα\"".as_bytes()),
        Bytes::from_static(
            r#"{"text":"line 1\nline 2 \"quoted\" back\\slash \u0000 tab\t","emoji":"👩‍👩‍👧"}"#
                .as_bytes(),
        ),
        Bytes::from_static("\"separators \u{2028} and \u{2029} — 😀 ✓\"".as_bytes()),
        Bytes::from_static(b"\"\""),
        // Looks like PostgreSQL's spill marker; must arrive verbatim.
        Bytes::from_static(b"__keayl_large_payload:1"),
        // Not UTF-8, with a NUL.
        Bytes::from_static(&[0xff, 0x00, 0xfe, b'"']),
    ];
    for len in [
        7_990, 7_996, 7_997, 7_998, 7_999, 8_000, 8_001, 8_192, 65_536, 1_048_576,
    ] {
        payloads.push(json_text_of_len(len).into());
    }
    payloads.push(Bytes::from_static(b"{\"small\":\"after the large ones\"}"));
    for p in &payloads {
        publish(&*b, &stream, p.clone()).await;
    }
    assert!(
        inbox.wait_for(payloads.len(), t).await,
        "only {} of {} payloads arrived",
        inbox.len(),
        payloads.len()
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let got = inbox.messages();
    assert_eq!(got.len(), payloads.len(), "more payloads arrived than sent");
    for (i, (got, want)) in got.iter().zip(&payloads).enumerate() {
        assert!(
            got == want,
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

/// 1,000 broadcasts on one stream from one task arrive in order at every
/// subscriber: two on another instance, one on the publishing instance.
pub async fn ordering_on_one_stream(factory: &impl Factory, options: &Options) {
    const N: usize = 1_000;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("order");
    let on_a = Inbox::new();
    let also_on_a = Inbox::new();
    let on_b = Inbox::new();
    let id_a = subscribe_live(&*a, &stream, &on_a, t).await;
    let id_a2 = subscribe_live(&*a, &stream, &also_on_a, t).await;
    let id_b = subscribe_live(&*b, &stream, &on_b, t).await;
    for n in 0..N {
        publish(&*b, &stream, format!("{n}")).await;
    }
    let expected: Vec<String> = (0..N).map(|n| n.to_string()).collect();
    for (name, inbox) in [
        ("the other instance", &on_a),
        ("the other instance's second subscriber", &also_on_a),
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
    a.unsubscribe(id_a2);
    b.unsubscribe(id_b);
}

/// Once a subscription's `ready` completed, a broadcast from any instance
/// reaches it — repeatedly, on fresh streams, with no delay in between.
/// Also: a second local subscriber of a live stream is live too, and
/// unsubscribing right after subscribing, before `ready` completes, wins:
/// nothing is delivered and nothing is left behind (the stream's
/// `subscriber_count` is 0).
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
    for p in [&a, &b] {
        expect_count(
            p,
            &stream,
            0,
            options,
            "a subscription cancelled before it was live",
        )
        .await;
    }
    a.unsubscribe(check_id);
}

/// `subscriber_count` is 0 for an unknown stream (also while others have
/// subscribers), counts subscribers as the backend defines ([`Counting`]) as
/// seen from every instance, and returns to 0 after everyone left.
pub async fn subscriber_count(factory: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("count");
    expect_count(&a, &stream, 0, options, "a fresh stream").await;

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
        expect_count(p, &stream, expected, options, "three subscribers").await;
    }
    let unknown = unique_stream("count-other");
    expect_count(&b, &unknown, 0, options, "another stream meanwhile").await;

    a.unsubscribe(a1);
    let expected_after = match options.counting {
        Counting::Subscribers => 2,
        _ => expected,
    };
    expect_count(
        &b,
        &stream,
        expected_after,
        options,
        "after one unsubscribe",
    )
    .await;

    a.unsubscribe(a2);
    b.unsubscribe(b1);
    for p in [&a, &b] {
        expect_count(p, &stream, 0, options, "after everyone left").await;
    }
}

/// Eight tasks broadcast 300 messages each on one stream at once, from two
/// instances, while four more tasks subscribe and unsubscribe over and over
/// on that stream and on streams of their own. A subscriber on each
/// instance gets every message exactly once, each broadcaster's in order;
/// the churned streams end with no subscribers.
///
/// Its test runs on a multi-threaded runtime.
pub async fn concurrent_broadcasting(factory: &impl Factory, options: &Options) {
    const TASKS: usize = 8;
    const EACH: usize = 300;
    const CHURNERS: usize = 4;
    const CHURN_ROUNDS: usize = 100;
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("busy");
    let stable = [Inbox::new(), Inbox::new()];
    let stable_ids = [
        subscribe_live(&*a, &stream, &stable[0], t).await,
        subscribe_live(&*b, &stream, &stable[1], t).await,
    ];
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let p = if task % 2 == 0 { a.clone() } else { b.clone() };
        let stream = stream.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                publish(&*p, &stream, format!("[{task},{i}]")).await;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Subscribers come and go on the same stream and on others meanwhile.
    let churned: Vec<String> = (0..CHURNERS)
        .map(|c| unique_stream(&format!("churn-{c}")))
        .collect();
    for (c, churn) in churned.iter().enumerate() {
        let p = if c % 2 == 0 { a.clone() } else { b.clone() };
        let busy = stream.clone();
        let churn = churn.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..CHURN_ROUNDS {
                let inbox = Inbox::new();
                let s = if i % 2 == 0 { &busy } else { &churn };
                let id = subscribe_live(&*p, s, &inbox, t).await;
                publish(&*p, &churn, "0").await;
                p.unsubscribe(id);
            }
        }));
    }
    for h in handles {
        join(h).await;
    }
    let wait = t.max(Duration::from_secs(10));
    for (name, inbox) in [
        ("the first instance's", &stable[0]),
        ("the second instance's", &stable[1]),
    ] {
        assert!(
            inbox.wait_for(TASKS * EACH, wait).await,
            "{name} subscriber got {} of {} messages",
            inbox.len(),
            TASKS * EACH
        );
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (name, inbox) in [
        ("the first instance's", &stable[0]),
        ("the second instance's", &stable[1]),
    ] {
        let messages = inbox.messages();
        assert_eq!(
            messages.len(),
            TASKS * EACH,
            "{name} subscriber got duplicates"
        );
        let mut next = [0usize; TASKS];
        for m in messages {
            let (task, i): (usize, usize) = serde_json::from_slice(&m).unwrap_or_else(|e| {
                panic!("{name} subscriber got {m:?}, not a broadcast of this check: {e}")
            });
            assert_eq!(
                i, next[task],
                "{name} subscriber got broadcaster {task}'s messages out of order"
            );
            next[task] += 1;
        }
    }
    for churn in &churned {
        for p in [&a, &b] {
            expect_count(p, churn, 0, options, "a churned stream after the churn").await;
        }
    }
    a.unsubscribe(stable_ids[0]);
    b.unsubscribe(stable_ids[1]);
}

/// "After `unsubscribe` returns the callback is not called again", even
/// within the delivery under way: two subscribers of one stream on one
/// instance each unsubscribe the other when called, so a broadcast (from
/// another instance) runs exactly one of them; that one keeps receiving.
pub async fn unsubscribe_inside_a_callback_stops_later_callbacks(
    factory: &impl Factory,
    options: &Options,
) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("fragile");
    let ids: [Arc<OnceLock<SubscriptionId>>; 2] = Default::default();
    let calls: [Arc<AtomicUsize>; 2] = Default::default();
    let callback = |me: usize| -> Callback {
        let p = a.clone();
        let other = ids[1 - me].clone();
        let calls = calls[me].clone();
        Arc::new(move |_: &Delivery| {
            calls.fetch_add(1, Ordering::SeqCst);
            if let Some(id) = other.get() {
                p.unsubscribe(*id);
            }
        })
    };
    for (me, id) in ids.iter().enumerate() {
        let sub = subscribe_callback_live(&*a, &stream, callback(me), t).await;
        id.set(sub).expect("set once");
    }
    let total = || calls[0].load(Ordering::SeqCst) + calls[1].load(Ordering::SeqCst);
    publish(&*b, &stream, "1").await;
    assert!(
        eventually(t, || total() >= 1).await,
        "nobody got the broadcast"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        total(),
        1,
        "the second subscriber was called although the first one had unsubscribed it during this delivery"
    );
    let survivor = if calls[0].load(Ordering::SeqCst) == 1 {
        0
    } else {
        1
    };
    publish(&*b, &stream, "2").await;
    assert!(
        eventually(t, || calls[survivor].load(Ordering::SeqCst) == 2).await,
        "the remaining subscriber did not get the next broadcast"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        calls[1 - survivor].load(Ordering::SeqCst),
        0,
        "the unsubscribed subscriber got the next broadcast"
    );
    for id in &ids {
        a.unsubscribe(*id.get().expect("set"));
    }
}

/// Every subscriber of a stream on one instance gets the same [`Delivery`]
/// for a broadcast: [`Delivery::frame_for`] encodes the client frame once
/// per broadcast and identifier (both subscribers see the very same bytes),
/// a message that is not JSON has no frame, and [`Delivery::stream`] names
/// the stream.
pub async fn deliveries_share_encoded_frames(factory: &impl Factory, options: &Options) {
    let t = options.timeout;
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("shared");
    let identifier = EncodedIdentifier::new(r#"{"channel":"ChatChannel"}"#);
    type Seen = (String, Bytes, Option<Bytes>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let lock = |seen: &Mutex<Vec<Seen>>| seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let seen = seen.clone();
        let identifier = identifier.clone();
        let callback: Callback = Arc::new(move |d: &Delivery| {
            let frame = d.frame_for(&identifier);
            seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                d.stream().to_owned(),
                d.message().clone(),
                frame,
            ));
        });
        ids.push(subscribe_callback_live(&*a, &stream, callback, t).await);
    }
    publish(&*b, &stream, r#"{"a":1}"#).await;
    publish(&*b, &stream, "not json").await;
    assert!(
        eventually(t, || lock(&seen).len() >= 4).await,
        "only {} of 4 deliveries arrived",
        lock(&seen).len()
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let seen = lock(&seen);
    assert_eq!(seen.len(), 4, "more deliveries than expected");
    assert!(
        seen.iter().all(|(s, _, _)| *s == stream),
        "a delivery names another stream"
    );
    let frames = |message: &[u8]| -> Vec<Option<Bytes>> {
        seen.iter()
            .filter(|(_, m, _)| m.as_ref() == message)
            .map(|(_, _, f)| f.clone())
            .collect()
    };
    let json = frames(br#"{"a":1}"#);
    assert_eq!(
        json.len(),
        2,
        "the JSON broadcast reached {} subscribers",
        json.len()
    );
    let (Some(first), Some(second)) = (&json[0], &json[1]) else {
        panic!("a JSON message has no frame: {json:?}");
    };
    assert_eq!(
        &first[..],
        br#"{"identifier":"{\"channel\":\"ChatChannel\"}","message":{"a":1}}"#,
        "wrong frame"
    );
    assert_eq!(
        first.as_ptr(),
        second.as_ptr(),
        "the frame was encoded twice: not once per broadcast and identifier"
    );
    let not_json = frames(b"not json");
    assert_eq!(
        not_json.len(),
        2,
        "the non-JSON broadcast reached {} subscribers",
        not_json.len()
    );
    assert!(
        not_json.iter().all(Option::is_none),
        "a message that is not JSON has a frame"
    );
    for id in ids {
        a.unsubscribe(id);
    }
}

/// For [synchronous](Options::synchronous) backends only (returns at once
/// otherwise): `ready` completes without a runtime, and by the time a
/// `broadcast` future completes — on its first poll — every subscriber on
/// every instance has been called, and an unsubscribed one is not.
pub async fn synchronous_delivery(factory: &impl Factory, options: &Options) {
    if !options.synchronous {
        return;
    }
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("inline");
    let inboxes = [Inbox::new(), Inbox::new(), Inbox::new()];
    let mut subs = Vec::new();
    for (p, inbox) in [&a, &a, &b].into_iter().zip(&inboxes) {
        let sub = p.subscribe(&stream, inbox.callback());
        poll_to_completion(sub.ready, "a subscription's `ready`")
            .unwrap_or_else(|e| panic!("subscription to {stream:?} failed: {e}"));
        subs.push((p.clone(), sub.id));
    }
    let broadcast = |p: &Arc<dyn PubSub>, message: &'static str| {
        p.broadcast(&stream, Bytes::from_static(message.as_bytes()))
            .now_or_never()
            .expect("a broadcast completes on its first poll")
            .unwrap_or_else(|e| panic!("broadcast on {stream:?} failed: {e}"))
    };
    let lens = || inboxes.iter().map(Inbox::len).collect::<Vec<_>>();
    broadcast(&b, "1");
    assert_eq!(
        lens(),
        [1, 1, 1],
        "not delivered when the broadcast (from another instance) completed"
    );
    broadcast(&a, "2");
    assert_eq!(
        lens(),
        [2, 2, 2],
        "not delivered when the broadcast (from the subscribers' instance) completed"
    );
    let (p, id) = &subs[0];
    p.unsubscribe(*id);
    broadcast(&b, "3");
    assert_eq!(
        lens(),
        [2, 3, 3],
        "an unsubscribed subscriber was called, or a subscriber was not"
    );
    for inbox in &inboxes {
        assert!(
            inbox.streams().iter().all(|s| *s == stream),
            "a delivery names another stream"
        );
    }
    assert_eq!(inboxes[1].texts(), ["1", "2", "3"]);
    for (p, id) in subs {
        p.unsubscribe(id);
    }
}

/// For [synchronous](Options::synchronous) backends only (returns at once
/// otherwise): a callback may subscribe, broadcast (on another stream and,
/// recursively, on its own), unsubscribe itself and read a count — all in
/// line, without deadlocking. Each broadcast from inside reaches the
/// subscribers live at that moment, and once the callback unsubscribed
/// itself it is not called again. Runs on a blocking thread, failing after
/// 20 s (a deadlock blocks a thread, which no async timeout interrupts).
pub async fn reentrant_callbacks(factory: &impl Factory, options: &Options) {
    if !options.synchronous {
        return;
    }
    let p = factory.instance().await;
    let outer = unique_stream("reentrant-outer");
    let inner_stream = unique_stream("reentrant-inner");
    let body = move || {
        let inner = Inbox::new();
        let outer_calls = Arc::new(AtomicUsize::new(0));
        let own_id: Arc<OnceLock<SubscriptionId>> = Arc::new(OnceLock::new());
        let inner_ids: Arc<Mutex<Vec<SubscriptionId>>> = Arc::default();
        let callback: Callback = {
            let p = p.clone();
            let inner = inner.clone();
            let outer_calls = outer_calls.clone();
            let own_id = own_id.clone();
            let outer = outer.clone();
            let inner_stream = inner_stream.clone();
            let inner_ids = inner_ids.clone();
            Arc::new(move |d: &Delivery| {
                let n = outer_calls.fetch_add(1, Ordering::SeqCst);
                // Subscribe from inside a callback...
                let s = p.subscribe(&inner_stream, inner.callback());
                drop(s.ready);
                inner_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(s.id);
                // ...broadcast to another stream from inside a callback...
                p.broadcast(&inner_stream, d.message().clone())
                    .now_or_never()
                    .expect("a broadcast completes at once")
                    .expect("the broadcast from inside a callback is accepted");
                // ...broadcast again on this very stream (bounded recursion)...
                if n < 2 {
                    let _ = p
                        .broadcast(&outer, Bytes::from(format!("{}", n + 1)))
                        .now_or_never();
                }
                // ...and unsubscribe oneself.
                if n == 2 {
                    p.unsubscribe(*own_id.get().expect("own id set"));
                }
                // And read the count.
                let _ = p.subscriber_count(&outer).now_or_never();
            })
        };
        let s = p.subscribe(&outer, callback);
        own_id.set(s.id).expect("set once");
        poll_to_completion(s.ready, "a subscription's `ready`")
            .unwrap_or_else(|e| panic!("subscription to {outer:?} failed: {e}"));
        let _ = p.broadcast(&outer, Bytes::from_static(b"0")).now_or_never();
        assert_eq!(
            outer_calls.load(Ordering::SeqCst),
            3,
            "the callback re-broadcasting on its own stream ran a wrong number of times"
        );
        // Each inner broadcast reached the inner subscribers live at that
        // moment: 1 + 2 + 3.
        assert_eq!(
            inner.len(),
            6,
            "broadcasts from inside a callback reached {} instead of 6 subscribers",
            inner.len()
        );
        // Unsubscribed itself: no more deliveries.
        let _ = p.broadcast(&outer, Bytes::from_static(b"9")).now_or_never();
        assert_eq!(
            outer_calls.load(Ordering::SeqCst),
            3,
            "called again after it unsubscribed itself"
        );
        for id in inner_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            p.unsubscribe(id);
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the check's thread did not finish: {e}"),
        },
        Err(_) => panic!("deadlock: re-entrant callbacks did not finish within 20 s"),
    }
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

/// Every broadcast gets a position assigned once, whichever instance
/// publishes it: one epoch, offsets counting up by one, delivered with the
/// message; every instance reads the same history, after a position or
/// since a time, and refuses an epoch it does not know. A backend without
/// history ([`Options::history`] false) says so: no positions, and
/// [`HistoryError::Unsupported`].
pub async fn history_positions_and_reads(factory: &impl Factory, options: &Options) {
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("history");
    let inbox = Inbox::new();
    let _sub = subscribe_live(&b, &stream, &inbox, options.timeout).await;
    for i in 1..=6u32 {
        let from = if i % 2 == 0 { &a } else { &b };
        from.broadcast(&stream, Bytes::from(format!("{{\"n\":{i}}}")))
            .await
            .expect("broadcast");
    }
    assert!(
        inbox.wait_for(6, options.timeout).await,
        "history: 6 broadcasts delivered, got {}",
        inbox.len()
    );
    let positions = inbox.positions();
    if !options.history {
        assert!(
            positions.iter().all(Option::is_none),
            "a backend without history delivers no positions: {positions:?}"
        );
        let read = b.history(&stream, &HistoryFrom::Since(0)).await;
        assert_eq!(
            read,
            Err(HistoryError::Unsupported),
            "history without history"
        );
        return;
    }
    let positions: Vec<Position> = positions
        .into_iter()
        .map(|p| p.expect("every broadcast has a position"))
        .collect();
    let epoch = positions[0].epoch.clone();
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    let first = offsets[0];
    assert_eq!(
        offsets,
        (first..first + 6).collect::<Vec<_>>(),
        "offsets count up by one per broadcast, in delivery order"
    );
    assert!(
        positions.iter().all(|p| p.epoch == epoch),
        "one epoch: {positions:?}"
    );
    let texts = inbox.texts();
    for reader in [&a, &b] {
        let after = HistoryFrom::After {
            offset: first + 2,
            epoch: epoch.to_string(),
        };
        let entries = reader
            .history(&stream, &after)
            .await
            .expect("history after a position");
        let got: Vec<(u64, String)> = entries
            .iter()
            .map(|e| {
                (
                    e.position.offset,
                    String::from_utf8_lossy(&e.message).into_owned(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = (3..6)
            .map(|i| (first + i as u64, texts[i].clone()))
            .collect();
        assert_eq!(got, want, "the entries after offset {}", first + 2);
        assert!(entries.iter().all(|e| e.position.epoch == epoch));
        let since = crate::pubsub::unix_now().saturating_sub(60);
        let all = reader
            .history(&stream, &HistoryFrom::Since(since))
            .await
            .expect("history since a time");
        assert_eq!(all.len(), 6, "everything of the last minute");
        let latest = HistoryFrom::After {
            offset: first + 5,
            epoch: epoch.to_string(),
        };
        assert_eq!(
            reader.history(&stream, &latest).await,
            Ok(Vec::new()),
            "nothing after the last"
        );
        let wrong = HistoryFrom::After {
            offset: first,
            epoch: format!("{epoch}-not"),
        };
        assert!(
            matches!(
                reader.history(&stream, &wrong).await,
                Err(HistoryError::UnknownEpoch(_))
            ),
            "an unknown epoch is refused"
        );
    }
}

/// A session snapshot saved by one instance is taken by another, once;
/// removed or expired ones are gone. A backend without sessions
/// ([`Options::sessions`] false) restores nothing.
pub async fn sessions_are_shared(factory: &impl Factory, options: &Options) {
    let a = factory.instance().await;
    let b = factory.instance().await;
    let sid = unique_stream("sid");
    let ttl = Duration::from_secs(30);
    a.save_session(&sid, Bytes::from_static(b"{\"snapshot\":1}"), ttl)
        .await
        .expect("save");
    let taken = b.take_session(&sid).await.expect("take");
    if !options.sessions {
        assert_eq!(taken, None, "a backend without sessions restores nothing");
        return;
    }
    assert_eq!(
        taken.as_deref(),
        Some(&b"{\"snapshot\":1}"[..]),
        "saved by a, taken by b"
    );
    assert_eq!(
        a.take_session(&sid).await.expect("take"),
        None,
        "taken once"
    );
    a.save_session(&sid, Bytes::from_static(b"2"), ttl)
        .await
        .expect("save");
    b.remove_session(&sid).await.expect("remove");
    assert_eq!(a.take_session(&sid).await.expect("take"), None, "removed");
    let short = unique_stream("sid");
    a.save_session(&short, Bytes::from_static(b"3"), Duration::from_secs(1))
        .await
        .expect("save");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.take_session(&short).await.expect("take"), None, "expired");
}

/// Presence sets are shared by every instance: one join per id however many
/// sessions it has, a leave only with its last session, info in join
/// order, a bound on distinct ids, and expired sessions reaped exactly once
/// (whichever instance reaps first reports the id that left).
pub async fn presence_is_shared(factory: &impl Factory, options: &Options) {
    use super::{PresenceError, PresenceLimits};
    let a = factory.instance().await;
    let b = factory.instance().await;
    let stream = unique_stream("presence");
    let limits = PresenceLimits {
        ttl: Duration::from_secs(30),
        max_members: 3,
    };
    let jack = Bytes::from_static(b"{\"name\":\"Jack\"}");
    let first = a
        .presence_join(&stream, "s1", "42", jack.clone(), limits)
        .await;
    if !options.presence {
        assert_eq!(
            first,
            Err(PresenceError::Unsupported),
            "a backend without presence says so"
        );
        return;
    }
    assert!(first.expect("join").joined, "a new id joins");
    let second = b
        .presence_join(&stream, "s2", "42", jack.clone(), limits)
        .await
        .expect("join");
    assert!(!second.joined, "a second session of an id is no join");
    let set = b.presence_info(&stream).await.expect("info");
    assert_eq!(set.total, 1, "one id, two sessions: {set:?}");
    assert_eq!(set.members[0].id, "42");
    assert_eq!(set.members[0].info, jack);
    let seven = a
        .presence_join(&stream, "s3", "7", Bytes::from_static(b"null"), limits)
        .await
        .expect("join");
    assert!(seven.joined);
    let ids: Vec<String> = a
        .presence_info(&stream)
        .await
        .expect("info")
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["42", "7"], "members in join order");
    assert_eq!(
        a.presence_leave(&stream, "s1").await.expect("leave"),
        None,
        "42 has s2 left"
    );
    assert_eq!(
        b.presence_leave(&stream, "s2").await.expect("leave"),
        Some("42".to_owned()),
        "the last session of 42 is gone"
    );
    assert_eq!(
        b.presence_leave(&stream, "s2").await.expect("leave"),
        None,
        "gone once"
    );
    // Bounded: 7, 8, 9 fill it; 10 is refused; another session of 8 is not.
    for (session, id) in [("s8", "8"), ("s9", "9")] {
        assert!(
            b.presence_join(&stream, session, id, Bytes::from_static(b"1"), limits)
                .await
                .expect("join")
                .joined
        );
    }
    assert_eq!(
        a.presence_join(&stream, "s10", "10", Bytes::from_static(b"1"), limits)
            .await,
        Err(PresenceError::Full(3)),
        "a full set refuses a new id"
    );
    assert!(
        !a.presence_join(&stream, "s8b", "8", Bytes::from_static(b"2"), limits)
            .await
            .expect("join")
            .joined
    );
    assert_eq!(a.presence_info(&stream).await.expect("info").total, 3);
    // A session that moves to another id: the old id leaves with it.
    let moved = b
        .presence_join(&stream, "s9", "9b", Bytes::from_static(b"1"), limits)
        .await;
    assert_eq!(
        moved,
        Err(PresenceError::Full(3)),
        "moving needs room too, and changes nothing when refused"
    );
    assert_eq!(
        a.presence_leave(&stream, "s9").await.expect("leave"),
        Some("9".to_owned())
    );
    let moved = b
        .presence_join(&stream, "s3", "9b", Bytes::from_static(b"1"), limits)
        .await
        .expect("join");
    assert!(moved.joined);
    assert_eq!(moved.left.as_deref(), Some("7"), "s3 was 7's only session");
    // Expiry: a short session not touched is reaped once; touched ones stay.
    let short = PresenceLimits {
        ttl: Duration::from_millis(600),
        ..limits
    };
    let other = unique_stream("presence");
    a.presence_join(&other, "t1", "gone", Bytes::from_static(b"1"), short)
        .await
        .expect("join");
    a.presence_join(&other, "t2", "kept", Bytes::from_static(b"1"), short)
        .await
        .expect("join");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let missing = a
        .presence_touch(
            &other,
            vec!["t2".into(), "unknown".into()],
            Duration::from_secs(30),
        )
        .await
        .expect("touch");
    assert_eq!(
        missing,
        ["unknown"],
        "touch reports the sessions it does not have"
    );
    let nowhere = unique_stream("presence");
    assert_eq!(
        b.presence_touch(&nowhere, vec!["x".into()], Duration::from_secs(30))
            .await
            .expect("touch"),
        ["x"],
        "on a stream without sessions too"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ra, rb) = tokio::join!(a.presence_reap(), b.presence_reap());
    let left: Vec<_> = ra
        .expect("reap")
        .into_iter()
        .chain(rb.expect("reap"))
        .filter(|l| l.stream == other || l.stream == stream)
        .collect();
    assert_eq!(left.len(), 1, "one expired id, reported once: {left:?}");
    assert_eq!(
        (left[0].stream.as_str(), left[0].id.as_str()),
        (other.as_str(), "gone")
    );
    let kept = b.presence_info(&other).await.expect("info");
    assert_eq!(kept.total, 1);
    assert_eq!(kept.members[0].id, "kept");
    // Clean up what the check left.
    for (s, session) in [
        (&other, "t2"),
        (&stream, "s8"),
        (&stream, "s8b"),
        (&stream, "s3"),
    ] {
        let _ = a.presence_leave(s, session).await;
    }
    assert_eq!(a.presence_info(&stream).await.expect("info").total, 0);
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

    #[test]
    fn checks_are_listed_once() {
        let mut names = CHECKS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len(), "a check is listed twice");
        assert!(CHECKS.contains(&"subscribe_broadcast_unsubscribe"));
        assert!(CHECKS.contains(&"reentrant_callbacks"));
    }
}
