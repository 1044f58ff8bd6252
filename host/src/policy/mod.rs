//! Sandbox policy: what each bot asks for (its manifest), what the admin
//! grants (its policy file), and the checks that keep the two honest — at
//! load time against the component's real imports, and at run time in every
//! host import.

pub mod capabilities;
pub mod egress;
pub mod imports;

pub use capabilities::{Capabilities, KvQuota, SendRate, Shortfall};
