//! The upstream relay: every lifecycle event reaches the control plane through a durable
//! outbox, none lost; commands come back down through the same typed door as the local control
//! API.

pub mod book;
pub mod commands;
pub mod ledger;
pub mod outbox;
pub mod relay;
