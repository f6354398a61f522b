//! idgate: a reverse proxy that gates sign-up and sign-in endpoints by allow and block lists.
//!
//! The crate is one library with a thin binary (`src/main.rs`). See `docs/ARCHITECTURE.md`
//! for the code map and the invariants between modules. The data path (`proxy`, `gate`,
//! `lists`, `identifier`, `tls`) never imports `admin` or `reload`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod gate;
pub mod identifier;
pub mod invite;
pub mod lists;
pub mod oauth;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod trigger;
