//! The Tencent Cloud API both halves serve, as far as it is shared so far: TC3 signatures and
//! CAM key policies (`tc3`), the search grammar of SearchGameServerSessions (`search`), and the
//! rules of aliases and queues (`alias`, `queue`). It imports neither half.

pub mod alias;
pub mod queue;
pub mod search;
pub mod tc3;
