//! Placements: started through a queue, served in order as processes free up, fulfilled when
//! their session is ACTIVE and their players are placed, timed out by the queue's timeout.

use std::time::Duration;

use tokio::time::Instant;

use super::Fleet;
use crate::agent::fleet::api::{ControlReply, FleetError};
use crate::agent::fleet::timers::Timer;
use crate::agent::session::GssStatus;
use crate::api::placement::{FINISHED_KEPT, MAX_PENDING, Placement, PlacementRequest, Status};
use crate::api::queue::{Destination, destination};
use crate::api::sessions::NewSession;

impl Fleet {
    /// Whether a destination ARN routes to this host's fleet.
    fn served_here(&self, arn: &str) -> bool {
        match destination(arn) {
            Ok(Destination::Fleet(f)) => f == self.cfg.fleet_id,
            Ok(Destination::Alias(a)) => self.aliases.get(&a).is_some_and(|a| {
                matches!(&a.routing, crate::api::alias::Routing::Simple { fleet_id } if *fleet_id == self.cfg.fleet_id)
            }),
            Err(_) => false,
        }
    }

    pub(super) fn start_placement(
        &mut self,
        request: PlacementRequest,
        now: Instant,
    ) -> Result<ControlReply, FleetError> {
        request
            .check()
            .map_err(|(param, message)| FleetError::Invalid { param, message })?;
        if self.placements.contains_key(&request.id) {
            return Err(FleetError::Denied(format!(
                "PlacementId {} is already used",
                request.id
            )));
        }
        let pending = self
            .placements
            .values()
            .filter(|p| p.status == Status::Pending)
            .count();
        if pending >= MAX_PENDING {
            return Err(FleetError::Limit(format!(
                "{MAX_PENDING} placements are pending already"
            )));
        }
        let queue = self
            .queues
            .get(&request.queue)
            .ok_or_else(|| FleetError::NotFound {
                kind: "game server session queue",
                id: request.queue.clone(),
            })?;
        let timeout = Duration::from_secs(u64::from(queue.timeout_secs));
        let served = queue.destinations.iter().any(|d| self.served_here(d));
        let wall = self.clock.wall;
        let mut placement = Placement {
            request,
            status: Status::Pending,
            reason: String::new(),
            start: wall,
            end: None,
            deadline: wall + timeout,
            gss_id: None,
            ip_address: String::new(),
            port: 0,
            placed: Vec::new(),
        };
        if !served {
            placement.status = Status::Failed;
            placement.end = Some(wall);
            placement.reason = format!(
                "no destination of queue {} is a fleet this host serves ({})",
                placement.request.queue, self.cfg.fleet_id
            );
        } else {
            self.timers.add(
                now + timeout,
                Timer::PlacementTimeout {
                    id: placement.request.id.clone(),
                },
            );
        }
        let id = placement.request.id.clone();
        self.placement_order.push_back(id.clone());
        if placement.status == Status::Pending {
            self.pending_placements.push_back(id.clone());
        }
        self.placements.insert(id.clone(), placement);
        self.advance_placements(now);
        self.forget_finished_placements();
        Ok(ControlReply::Placement(Box::new(
            self.placements[&id].clone(),
        )))
    }

    pub(super) fn stop_placement(&mut self, id: &str) -> Result<ControlReply, FleetError> {
        let wall = self.clock.wall;
        let p = self
            .placements
            .get_mut(id)
            .ok_or_else(|| FleetError::NotFound {
                kind: "game server session placement",
                id: id.to_string(),
            })?;
        if p.status != Status::Pending {
            return Err(FleetError::Denied(format!(
                "placement {id} is {}: only a PENDING one can be stopped",
                p.status.as_str()
            )));
        }
        p.status = Status::Cancelled;
        *self
            .placement_outcomes
            .entry(Status::Cancelled.as_str())
            .or_default() += 1;
        p.end = Some(wall);
        Ok(ControlReply::Placement(Box::new(p.clone())))
    }

    pub(super) fn describe_placement(&self, id: &str) -> Result<ControlReply, FleetError> {
        self.placements
            .get(id)
            .map(|p| ControlReply::Placement(Box::new(p.clone())))
            .ok_or_else(|| FleetError::NotFound {
                kind: "game server session placement",
                id: id.to_string(),
            })
    }

    pub(super) fn placement_timed_out(&mut self, id: &str) {
        let wall = self.clock.wall;
        if let Some(p) = self.placements.get_mut(id)
            && p.status == Status::Pending
        {
            p.status = Status::TimedOut;
            *self
                .placement_outcomes
                .entry(Status::TimedOut.as_str())
                .or_default() += 1;
            p.end = Some(wall);
            p.reason = format!(
                "no process took the session within the queue's timeout ({} s)",
                p.deadline
                    .duration_since(p.start)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            );
        }
    }

    /// Moves pending placements on, oldest first: a session for those without one (while
    /// processes are free), players placed for those whose session is ACTIVE, and a fresh try
    /// for those whose session failed. Called after every input.
    pub(super) fn advance_placements(&mut self, now: Instant) {
        if self.pending_placements.is_empty() {
            return;
        }
        let placements = &self.placements;
        self.pending_placements.retain(|id| {
            placements
                .get(id)
                .is_some_and(|p| p.status == Status::Pending)
        });
        // Once no process is free, the rest without a session wait too (but those with one
        // may still be fulfilled).
        let mut no_process = false;
        for id in self.pending_placements.clone() {
            let Some(p) = self.placements.get(&id) else {
                continue;
            };
            match p.gss_id.clone() {
                None if no_process => {}
                None => {
                    let req = NewSession {
                        max_players: p.request.max_players,
                        name: p.request.name.clone(),
                        creator_id: String::new(),
                        game_properties: p.request.game_properties.clone(),
                        data: p.request.data.clone(),
                        custom_id: Some(p.request.id.clone()),
                        idempotency_token: None,
                    };
                    match self.create_session(req, now) {
                        Ok(s) => {
                            if let Some(p) = self.placements.get_mut(&id) {
                                p.gss_id = Some(s.id);
                            }
                        }
                        // No free process, activations at their limit, or the host reserved
                        // or draining for now: wait (the queue's timeout still runs).
                        Err(FleetError::Limit(_) | FleetError::Denied(_)) => no_process = true,
                        Err(e) => {
                            let wall = self.clock.wall;
                            if let Some(p) = self.placements.get_mut(&id) {
                                p.status = Status::Failed;
                                *self
                                    .placement_outcomes
                                    .entry(Status::Failed.as_str())
                                    .or_default() += 1;
                                p.end = Some(wall);
                                p.reason = e.to_string();
                            }
                        }
                    }
                }
                Some(gss_id) => {
                    let status = self
                        .find_session(&gss_id)
                        .map(|s| (s.status, s.ip_address.clone(), s.port));
                    match status {
                        Ok((GssStatus::Active, ip, port)) => {
                            let players = p.request.new_players();
                            let wall = self.clock.wall;
                            let joined = if players.is_empty() {
                                Ok(Vec::new())
                            } else {
                                self.join(&gss_id, players, now)
                            };
                            if let Some(p) = self.placements.get_mut(&id) {
                                p.end = Some(wall);
                                match joined {
                                    Ok(list) => {
                                        p.status = Status::Fulfilled;
                                        *self
                                            .placement_outcomes
                                            .entry(Status::Fulfilled.as_str())
                                            .or_default() += 1;
                                        p.ip_address = ip;
                                        p.port = port;
                                        p.placed = list
                                            .into_iter()
                                            .map(|ps| (ps.player_id, ps.id))
                                            .collect();
                                    }
                                    Err(e) => {
                                        p.status = Status::Failed;
                                        *self
                                            .placement_outcomes
                                            .entry(Status::Failed.as_str())
                                            .or_default() += 1;
                                        p.reason = format!("the players could not be placed: {e}");
                                    }
                                }
                            }
                        }
                        Ok((GssStatus::Activating, ..)) => {}
                        // The session failed to activate (or is gone): try another process.
                        _ => {
                            if let Some(p) = self.placements.get_mut(&id) {
                                p.gss_id = None;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Keeps the newest finished placements only.
    fn forget_finished_placements(&mut self) {
        let finished = self
            .placements
            .values()
            .filter(|p| p.status != Status::Pending)
            .count();
        let mut excess = finished.saturating_sub(FINISHED_KEPT);
        while excess > 0 {
            let Some(oldest) = self.placement_order.front().cloned() else {
                break;
            };
            if self
                .placements
                .get(&oldest)
                .is_some_and(|p| p.status == Status::Pending)
            {
                break;
            }
            self.placement_order.pop_front();
            if self.placements.remove(&oldest).is_some() {
                excess -= 1;
            }
        }
    }
}
