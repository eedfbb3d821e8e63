//! # keayl-cable: Action Cable-style real-time messaging, transport-independent
//!
//! A **connection** holds a client; **channels** group its subscriptions;
//! a **pub/sub** backend fans broadcasts out to everyone on a stream. This
//! crate is the sans-IO core: no sockets. A connection talks to its client
//! only through a [`Sink`]; the connection driver
//! ([`socket`]) runs it over any stream of frames, and the WebSocket
//! transport (`keayl-axum`) adapts a socket to that driver.
//!
//! | Concept | Where |
//! |---|---|
//! | Wire format (commands in, messages out) | [`protocol`] |
//! | Connections, identification, authentication | [`connection`] |
//! | Channels, streams, transmit, reject, timers | [`channel`] |
//! | The cable: what a process's connections share (pub/sub, channel registry, connection handler, limits), broadcasts, remote connections | [`cable`] ([`Cable`]) |
//! | The connection driver over any transport: command queue, outbox, pings, liveness | [`socket`] ([`Hub`](socket::Hub)) |
//! | Pub/sub backends | [`pubsub`] ([`InMemory`], [`External`]) |
//! | Coders | [`coder`] |
//! | Stream names from models | [`naming`] |
//! | Broadcasting from models (Turbo Streams) | [`broadcasting`], [`turbo`] |
//! | Signed stream names (Rails `MessageVerifier`) | [`signing`] |
//! | Testing channels and connections (Rails' `Channel::TestCase`) | [`testing`] |

pub mod broadcasting;
pub mod cable;
pub mod channel;
pub mod coder;
pub mod connection;
pub mod jwt;
mod log_limit;
pub mod naming;
pub mod protocol;
pub mod pubsub;
pub mod pubsub_channel;
mod registry;
pub mod signing;
pub mod socket;
pub mod testing;
pub mod turbo;
pub mod turbo_channel;

pub use broadcasting::{Broadcastable, Broadcaster, set_cable_pubsub};
pub use cable::{Cable, CableConfig};
pub use channel::{
    Action, Channel, ChannelContext, ChannelError, Data, NoActions, Params, StreamFrom,
};
pub use coder::{Coder, JsonCoder};
pub use connection::{
    CommandError, ConnectError, Connection, ConnectionHandler, Identifiers, Request, Sink,
    SubscribeOutcome,
};
pub use pubsub::{External, InMemory, PubSub, PubSubClient};

#[doc(hidden)]
pub use bytes as __bytes;
