//! One file per provider; wrappers (failover) implement the same trait.

pub mod anthropic;
pub mod failover;
#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub mod versions;
