//! The host and fleet actions: what runs here and under which configuration, in the SDK's
//! models. On one host there is one fleet (`fleet-id`) and one instance (`instance-id`).

use crate::api::ErrorCode;
use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected, view};
use crate::agent::config::ProtectionPolicy;
use crate::agent::fleet::{Control, ControlReply, InstanceCounters};
use crate::api::params::Params;

/// GSE's name of a protection policy.
pub fn policy_name(p: ProtectionPolicy) -> &'static str {
    match p {
        ProtectionPolicy::NoProtection => "NoProtection",
        ProtectionPolicy::TimeLimitProtection => "TimeLimitProtection",
        ProtectionPolicy::FullProtection => "FullProtection",
    }
}

impl Capi {
    async fn counters(&self) -> Result<InstanceCounters, CapiError> {
        match self.fleet.control(Control::DescribeInstance).await? {
            ControlReply::Instance(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// `FleetIds` (optional list): each must be this host's fleet.
    fn check_fleet_ids(&self, p: &Params) -> Result<(), CapiError> {
        for f in p.fleet_ids()?.into_iter().flatten() {
            self.check_this_fleet(&f)?;
        }
        Ok(())
    }

    /// `InstanceId` (`required`, or optional): must be this host's.
    fn check_instance(&self, p: &Params, required: bool) -> Result<(), CapiError> {
        if required {
            p.str("InstanceId", 128)?;
        }
        match p.opt_str("InstanceId", 128)? {
            Some(i) if i != self.cfg.instance_id => Err(CapiError::new(
                ErrorCode::ResourceNotFound,
                format!(
                    "instance {i} is not this host (it is {})",
                    self.cfg.instance_id
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(super) async fn describe_runtime(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId"])?;
        self.check_fleet(&p, true).await?;
        match self.fleet.control(Control::DescribeRuntime).await? {
            ControlReply::Runtime(rc) => Ok(json!({
                "RuntimeConfiguration": {
                    "GameServerSessionActivationTimeoutSeconds": rc.activation_timeout.as_secs(),
                    "MaxConcurrentGameServerSessionActivations": rc.max_concurrent_activations,
                    "ServerProcesses": rc.server_processes.iter().map(|s| json!({
                        "ConcurrentExecutions": s.concurrent_executions,
                        "LaunchPath": s.launch_path,
                        "Parameters": s.parameters,
                    })).collect::<Vec<_>>(),
                }
            })),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn describe_instances(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(
            map,
            &["FleetId", "InstanceId", "Offset", "Limit", "IpAddress"],
        )?;
        self.check_fleet(&p, false).await?;
        self.check_instance(&p, false)?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        p.opt_int("Limit", 1, 100)?;
        let c = self.counters().await?;
        let instance = view::instance(&c, &self.cfg, false)["Instance"].clone();
        let shown = if offset == 0 { vec![instance] } else { vec![] };
        Ok(json!({"Instances": shown, "TotalCount": 1}))
    }

    pub(super) async fn set_server_reserved(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "InstanceId", "ReserveValue"])?;
        self.check_fleet(&p, true).await?;
        self.check_instance(&p, true)?;
        let reserve = p.int("ReserveValue", 0, 1)? == 1;
        match self.fleet.control(Control::SetReserved(reserve)).await? {
            ControlReply::Done => Ok(json!({})),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn set_server_weight(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetId", "InstanceId", "Weight"])?;
        self.check_fleet(&p, true).await?;
        self.check_instance(&p, true)?;
        let weight = p.int("Weight", 1, 10)? as u8;
        match self.fleet.control(Control::SetWeight(weight)).await? {
            ControlReply::Done => Ok(json!({})),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn describe_utilization(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetIds"])?;
        self.check_fleet_ids(&p)?;
        let c = self.counters().await?;
        Ok(json!({
            "FleetUtilization": [{
                "FleetId": self.cfg.fleet_id,
                "ActiveServerProcessCount": c.active_process_cnt,
                "ActiveGameServerSessionCount": c.game_session_cnt,
                "CurrentPlayerSessionCount": c.player_session_cnt,
                "MaximumPlayerSessionCount": c.max_player_session_cnt,
            }],
            "TotalCount": 1,
        }))
    }

    pub(super) fn list_fleets(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["AssetId", "Offset", "Limit", "Filters"])?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        p.opt_int("Limit", 1, 100)?;
        p.opt_str("AssetId", 128)?;
        let ids = if offset == 0 {
            vec![self.cfg.fleet_id.clone()]
        } else {
            vec![]
        };
        Ok(json!({"FleetIds": ids, "TotalCount": 1}))
    }

    pub(super) fn describe_fleet_attributes(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["FleetIds", "Offset", "Limit"])?;
        self.check_fleet_ids(&p)?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        p.opt_int("Limit", 1, 100)?;
        let protection = &self.cfg.protection;
        let attributes = json!({
            "AssetId": "",
            "CreationTime": "",
            "Description": "self-hosted by gse-agent",
            "FleetArn": self.cfg.arn(&format!("fleet/{}", self.cfg.fleet_id)),
            "FleetId": self.cfg.fleet_id,
            "FleetType": "ON_DEMAND",
            "InstanceType": "",
            "Name": self.cfg.fleet_id,
            "NewGameServerSessionProtectionPolicy": policy_name(protection.policy),
            "OperatingSystem": std::env::consts::OS,
            "GameServerSessionProtectionTimeLimit": protection.time_limit.as_secs() / 60,
            "Status": "ACTIVE",
            "StoppedActions": [],
            "TerminationTime": "",
            "BillingStatus": "",
        });
        let shown = if offset == 0 {
            vec![attributes]
        } else {
            vec![]
        };
        Ok(json!({"FleetAttributes": shown, "TotalCount": 1}))
    }
}
