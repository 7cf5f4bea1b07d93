//! GSE's limits, and what a host keeps of its history, which both halves hold to: one place
//! for each figure.

/// GSE's limit on the server processes of one instance: the sum of `ConcurrentExecutions` over
/// every entry of a runtime configuration.
pub const MAX_PROCESSES: u32 = 50;

/// Finished game server sessions a host keeps for Describe calls before the oldest are
/// forgotten.
pub const FINISHED_SESSIONS_KEPT: usize = 1000;

/// Finished player sessions a host keeps per live game server session (a long match sees many).
pub const FINISHED_PLAYERS_KEPT: usize = 1000;

/// The default page size of DescribePlayerSessions.
pub const DEFAULT_PAGE: usize = 50;

/// The largest page (`Limit`) of DescribePlayerSessions accepted.
pub const MAX_PAGE: usize = 1024;
