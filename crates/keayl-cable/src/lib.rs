//! # keayl-cable: Action Cable-style real-time messaging, transport-independent
//!
//! (crate map written below as modules land)

pub mod protocol;
pub mod signing;
pub mod turbo;
