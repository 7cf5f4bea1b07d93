//! Escaped descendants: processes a game started that left its process group (`setsid`,
//! `setpgid`), so the group kill at its exit missed them.
//!
//! Every game carries its tag in its environment (`GSE_PROCESS_ID`, `GSE_FLEET_ID`,
//! `GSE_INSTANCE_ID`, plus `GSE_AGENT_LAUNCH_ID`, a random id per launch that the process
//! module adds), and descendants inherit it. The launch id keeps two agents on one host that
//! share fleet and instance ids (tests do) from killing each other's games. After a game ended
//! (and its group was killed), [`kill_escaped`] scans `/proc` for processes whose
//! `/proc/<pid>/environ` carries the same values and that started no earlier than the game,
//! and SIGKILLs each (and
//! the group it leads) through a pidfd opened before its start time is checked again, so a
//! reused pid is never hit. With the agent as child subreaper ([`super::reaper`]) the killed
//! orphans are the agent's children and its orphan reaper collects them.
//!
//! What still escapes:
//! - a descendant that cleared or rewrote its environment (or `exec`ed with a new one) and
//!   left the group: `/proc/<pid>/environ` is the environment it was exec'ed with;
//! - a descendant running as another uid (setuid binary, or the game's user when the agent is
//!   not root): its environ is unreadable without privilege;
//! - a descendant started in another pid namespace (a container the game started);
//! - a descendant forked between the last scan pass and the kill of its parent (the scan
//!   repeats a few passes until it finds nothing, which bounds this to a fork storm);
//! - without pidfds (ENOSYS) the kill is by pid after a start-time check, which is racy.

use std::os::fd::AsFd;

use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use nix::sys::signal::Signal;

use super::identity::read_stat;
use super::sys::{self, PIDFD_SIGNAL_PROCESS_GROUP};

/// Scan passes at most (each pass after the first catches what forked during the previous).
const PASSES: usize = 5;

/// The environment values that mark a game's descendants: its process, fleet and instance
/// ids, and the launch id when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    /// `GSE_PROCESS_ID` first.
    pairs: Vec<(String, String)>,
}

/// The tag variables.
const TAG_VARS: [&str; 3] = ["GSE_PROCESS_ID", "GSE_FLEET_ID", "GSE_INSTANCE_ID"];
/// The per-launch id the process module adds to a game's environment.
pub(crate) const LAUNCH_ID_VAR: &str = "GSE_AGENT_LAUNCH_ID";

/// The `K=V` pairs of a raw `/proc/<pid>/environ` (NUL-separated).
fn environ_vars(environ: &[u8]) -> Vec<(&str, &str)> {
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .collect()
}

impl Tag {
    /// The tag of a game started with `env`; `None` unless all three variables are set.
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Option<Tag> {
        let get = |name: &str| {
            env.clone()
                .into_iter()
                .find(|(k, _)| *k == name)
                .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        let mut pairs = TAG_VARS
            .iter()
            .map(|v| get(v))
            .collect::<Option<Vec<_>>>()?;
        pairs.extend(get(LAUNCH_ID_VAR));
        Some(Tag { pairs })
    }

    /// The tag in a raw `/proc/<pid>/environ`.
    pub fn from_environ(environ: &[u8]) -> Option<Tag> {
        Self::from_env(environ_vars(environ).iter().copied())
    }

    /// The same tag, for the launch `id`.
    pub fn with_launch(mut self, id: String) -> Tag {
        self.pairs.retain(|(k, _)| k != LAUNCH_ID_VAR);
        self.pairs.push((LAUNCH_ID_VAR.to_string(), id));
        self
    }

    /// The process id of the tagged game.
    pub fn process_id(&self) -> &str {
        &self.pairs[0].1
    }

    /// The pairs a descendant's environment carries.
    fn pairs(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// The sweeps started and not finished.
static SWEEPS: std::sync::LazyLock<TaskTracker> = std::sync::LazyLock::new(TaskTracker::new);

/// Counts a sweep as pending until the token is dropped.
pub(crate) fn sweep_pending() -> TaskTrackerToken {
    SWEEPS.token()
}

/// Resolves once no sweep for escaped descendants is pending (see [`super::settle`]); no
/// sweep counts after this.
pub(crate) async fn settled() {
    SWEEPS.close();
    SWEEPS.wait().await;
}

/// Kills every live process carrying `tag` that started at or after `since_ticks`; returns
/// how many were signalled. Blocking (reads `/proc`): run it off the async workers.
pub(crate) fn kill_escaped(tag: &Tag, since_ticks: u64) -> usize {
    let mut total = 0;
    for _ in 0..PASSES {
        let n = one_pass(tag, since_ticks);
        total += n;
        if n == 0 {
            break;
        }
    }
    total
}

/// Every other process whose environment is readable, with it (`/proc/<pid>/environ`).
fn environs() -> impl Iterator<Item = (u32, Vec<u8>)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |pid| *pid > 1 && *pid != me)
        .filter_map(|pid| Some((pid, std::fs::read(format!("/proc/{pid}/environ")).ok()?)))
}

fn one_pass(tag: &Tag, since_ticks: u64) -> usize {
    sweep(
        &tag.pairs(),
        |_, start| start >= since_ticks,
        "killed a descendant that escaped the game's process group",
    )
}

/// Stops the game processes of this agent that no record names: ones launched in the moment
/// before the agent died, before their launch was saved. A stray is a live process whose
/// environment carries every pair of `owner` (the fleet, instance and game root of this
/// agent) and a `GSE_PROCESS_ID` not in `known` (the recorded processes, whose descendants
/// carry their ids). Each is SIGKILLed with the group it leads; returns how many. Blocking.
pub fn kill_strays(owner: &[(&str, &str)], known: &std::collections::HashSet<String>) -> usize {
    sweep(
        owner,
        |process_id, _| !known.contains(process_id),
        "stopped a game process no saved record names (launched just before the last agent died)",
    )
}

/// Stops what is left of a recorded game that was not adopted (it ended while no agent ran,
/// or it could not be verified): every live process carrying `owner` and the game's
/// `process_id` that started at or after `since_ticks` (its escaped descendants; the game
/// itself if it still runs unverified). Returns how many. Blocking.
pub fn kill_remains(owner: &[(&str, &str)], process_id: &str, since_ticks: u64) -> usize {
    sweep(
        owner,
        |id, start| id == process_id && start >= since_ticks,
        "stopped what was left of a game that was not adopted",
    )
}

/// SIGKILLs (with their groups) the live processes whose environment carries every pair of
/// `owner` and a `GSE_PROCESS_ID` for which `pick(process id, start ticks)` holds.
fn sweep(owner: &[(&str, &str)], pick: impl Fn(&str, u64) -> bool, what: &str) -> usize {
    let mut killed = 0;
    for (pid, environ) in environs() {
        let vars = environ_vars(&environ);
        let has = |k: &str, v: &str| vars.iter().any(|(vk, vv)| *vk == k && *vv == v);
        if !owner.iter().all(|(k, v)| has(k, v)) {
            continue;
        }
        let Some((_, process_id)) = vars.iter().find(|(k, _)| *k == TAG_VARS[0]) else {
            continue;
        };
        let Ok(Some(stat)) = read_stat(pid) else {
            continue;
        };
        if !stat.is_dead()
            && pick(process_id, stat.start_ticks)
            && kill_verified(pid, stat.start_ticks)
        {
            tracing::warn!(process.pid = pid, process.id = *process_id, "{what}");
            killed += 1;
        }
    }
    killed
}

/// SIGKILLs `pid` and the group it leads if it still is the process that started at
/// `start_ticks`.
fn kill_verified(pid: u32, start_ticks: u64) -> bool {
    let same =
        || matches!(read_stat(pid), Ok(Some(s)) if s.start_ticks == start_ticks && !s.is_dead());
    match sys::pidfd_open(pid) {
        Ok(fd) => {
            // The pidfd names whatever process had the pid when it was opened; the start time,
            // checked after, proves it is the one found.
            if !same() {
                return false;
            }
            let _ = sys::pidfd_send_signal(fd.as_fd(), Some(Signal::SIGKILL), 0);
            let _ = sys::pidfd_send_signal(
                fd.as_fd(),
                Some(Signal::SIGKILL),
                PIDFD_SIGNAL_PROCESS_GROUP,
            );
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            if !same() {
                return false;
            }
            let Ok(raw) = i32::try_from(pid) else {
                return false;
            };
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), Signal::SIGKILL).is_ok()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_needs_all_three_values() {
        let environ = b"PATH=/bin\0GSE_PROCESS_ID=p1\0GSE_FLEET_ID=f\0GSE_INSTANCE_ID=i\0";
        let tag = Tag::from_environ(environ).unwrap();
        assert_eq!(tag.process_id(), "p1");
        let env = [
            ("GSE_PROCESS_ID", "p1"),
            ("GSE_FLEET_ID", "f"),
            ("GSE_INSTANCE_ID", "i"),
        ];
        assert_eq!(Tag::from_env(env.iter().copied()), Some(tag.clone()));
        let launched = tag.clone().with_launch("l1".into());
        assert_ne!(launched, tag);
        let environ =
            b"GSE_PROCESS_ID=p1\0GSE_FLEET_ID=f\0GSE_INSTANCE_ID=i\0GSE_AGENT_LAUNCH_ID=l1";
        assert_eq!(Tag::from_environ(environ), Some(launched));
        assert_eq!(
            Tag::from_environ(b"GSE_PROCESS_ID=p1\0GSE_FLEET_ID=f\0"),
            None
        );
    }
}
