//! Braid: bonded-cellular live-video uplink.
//!
//! Layout (sans-IO cores in `core`, thin async shells around them):
//!
//! - [`config`]: TOML schema for `edge.toml` / `relay.toml` -> validated types.
//! - [`core`]: pure state machines driven by `(now, event)`, no sockets, no clocks:
//!   [`core::wire`] (datagram header and control messages), [`core::ts`] (MPEG-TS
//!   packet classification), [`core::sender`] (edge: per-link estimators, scheduler,
//!   ARQ, failover), [`core::receiver`] (relay: reorder buffer, release at fixed
//!   latency, NACKs, per-link receiver reports).
//! - [`sim`]: mahimahi traces, the trace-driven link model, the perfect-aggregate
//!   bound, the virtual-time harness and the userspace link emulator.
//! - [`transport`]: quinn glue: TLS identities, endpoint configuration, per-link
//!   sockets (`SO_BINDTODEVICE` or a source address), interface watching.
//! - [`media`]: what the edge sends: the [`media::MediaControl`] contract with the
//!   bitrate controller ([`core::bitrate`]), the GStreamer camera/test-pattern encoder
//!   (capture and encode pipelines, encoder quirks table, NO SIGNAL slate) and the SRT
//!   pass-through input.
//! - [`edge`], [`relay`]: the daemons (the relay's outputs: UDP, SRT, RTMP and
//!   file recording, each restarted with backoff on failure).
//! - [`device`]: the box's front panel (status LED, tally, button over GPIO) and
//!   health monitor (CPU, memory, temperatures, disk).
//! - [`system`]: signals, stats HTTP endpoints.
//! - [`web`]: the local web page and its JSON API (docs/web-api.md).
//! - [`ota`]: signed update bundles, A/B slots, health check and rollback.
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod device;
pub mod edge;
pub mod media;
pub mod ota;
pub mod relay;
pub mod sim;
pub mod system;
pub mod transport;
pub mod web;
