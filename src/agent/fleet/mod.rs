//! The fleet: desired process counts, restarts, sessions and players on this host.
//!
//! [`state::Fleet`] is the pure centre: every input (an SDK call, a control command, a process
//! exit, a health result, a timer) changes its tables and queues [`Effect`]s; it performs no
//! I/O. [`actor`] is the thin shell that owns it, runs the effects (spawn, signal, callbacks,
//! events) and feeds results back.

pub mod actor;
pub mod api;
pub mod clock;
pub mod restart;
pub mod state;
pub mod timers;

pub use actor::{FleetHandle, spawn_fleet};
pub use api::{
    Control, ControlReply, Effect, EntryGauge, EntryView, FleetError, FleetGauges, FleetStatus,
    HostState, HostStateScope, InstanceCounters, LastExit, PlayerQuery, ProcessGauge, ProcessView,
    SdkCall, SdkReply, SessionQuery, SessionState, StopReason,
};
pub use state::Fleet;
