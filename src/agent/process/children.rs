//! The registry of the agent's own children that someone waits for by pid.
//!
//! The orphan reaper ([`super::reaper`]) reaps zombie children of the agent, but it must never
//! steal the exit status of a child that a caller is about to wait for. So every such child is
//! spawned through [`spawn`], which holds the registry lock across fork/exec and registration;
//! the reaper reaps only unregistered pids, under the same lock. A pid is unregistered only
//! after its owner reaped it (or gave it up). Counts, not a set: a reaped pid may be reused by
//! the next registered child before its first owner unregistered it.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Registered pids and how many registrations each has.
static REGISTRY: Mutex<BTreeMap<u32, u32>> = Mutex::new(BTreeMap::new());

/// The registry, locked (a panic while holding it leaves the map intact: it is still used).
pub(crate) fn lock() -> MutexGuard<'static, BTreeMap<u32, u32>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `pid` is registered (with the lock held).
pub(crate) fn is_registered(map: &BTreeMap<u32, u32>, pid: u32) -> bool {
    map.contains_key(&pid)
}

/// Spawns `cmd` and registers its pid before anyone can reap it; the caller must reap it (or
/// call [`unregister`]).
pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut map = lock();
    let child = cmd.spawn()?;
    *map.entry(child.id()).or_insert(0) += 1;
    Ok(child)
}

/// Ends one registration of `pid`.
pub(crate) fn unregister(pid: u32) {
    unregister_locked(&mut lock(), pid);
}

/// Ends one registration of `pid`, with the lock held.
pub(crate) fn unregister_locked(map: &mut BTreeMap<u32, u32>, pid: u32) {
    if let Some(n) = map.get_mut(&pid) {
        *n -= 1;
        if *n == 0 {
            map.remove(&pid);
        }
    }
}

/// Like [`Command::output`] (stdin null, stdout and stderr captured), through the registry:
/// for short commands the agent runs and waits for (`useradd`, `groupadd`). Blocking.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd)?;
    let pid = child.id();
    let out = child.wait_with_output();
    unregister(pid);
    out
}
