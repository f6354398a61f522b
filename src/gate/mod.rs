//! The gate: everything that turns a request into a verdict, without I/O.
//!
//! - [`route`] normalizes request paths and matches them to configured routes (a superset of
//!   what any upstream framework would route to the handler).
//! - [`extract`] finds every identifier in a buffered request and refuses ambiguous requests.
//! - [`decision`] decides a parsed identifier against the snapshot's lists and restrictions.
//!
//! The gate never imports `admin`, `store` or `reload` and never touches the network.

pub mod decision;
pub mod extract;
pub mod route;

pub use decision::{Decision, Explanation, Reason, decide, explain};
