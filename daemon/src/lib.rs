//! p2pstored: the whole p2pstore node as a library.
//!
//! A node stores files encrypted at other nodes (client role), stores
//! others' encrypted shards for pay (provider role), or helps peers find
//! each other (bootstrap/rendezvous role). Data flows one way: RPC
//! ([`rpc`]) → node services ([`node`], [`client`], [`provider`]) →
//! network ([`network`]) | store | wallet. The `p2pstored` binary is a thin
//! shell over [`daemon::run`].

pub mod blocking;
pub mod client;
pub mod config;
pub mod contracts;
pub mod crypto;
pub mod daemon;
pub mod db;
pub mod erasure;
pub mod error;
pub mod events;
pub mod failpoint;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod ids;
pub mod keys;
pub mod merkle;
pub mod metrics;
pub mod network;
pub mod node;
pub mod perf;
pub mod pointer;
pub mod progress;
pub mod protocol;
pub mod provider;
pub mod rpc;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod wallet;

pub use error::{Error, Result};
