//! The capability layer: what the assistant can do besides talking.
//!
//! # Layout
//! - [`registry`]: [`Registry`], the loaded tools (built-in and from skills) and the ones that
//!   could not load with the reason; picks the few tools relevant to a turn (lean prompts).
//! - [`ssrf`]: [`ssrf::HostPolicy`], the address guard of `web_fetch` and the browser.
//! - [`web_fetch`]: GET a URL and return readable text.
//! - [`browser`]: a managed headless Chromium over the DevTools protocol.
//! - [`cron`]: scheduled jobs (cron expressions, intervals, one-shots), their scheduler loop
//!   and the `cron` tool.
//! - [`exec`]: shell commands in the workspace under the deny/allowlist/ask policy;
//!   [`approvals`]: the owner's yes/no for `ask`.
//! - [`memory`]: remember/recall facts per user in a knowledge index.
//! - [`skills`]: skills scanned from a folder and hot-reloaded.

pub mod approvals;
pub mod browser;
pub mod cron;
pub mod exec;
pub mod memory;
pub mod registry;
pub mod skills;
pub mod ssrf;
pub mod web_fetch;

pub use registry::{Capability, CapabilityKind, CapabilityStatus, Registry};
