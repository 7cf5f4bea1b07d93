//! Start/Describe/StopGameServerSessionPlacement, in the SDK's `GameServerSessionPlacement`
//! model.

use serde_json::{Map, Value, json};

use super::{Capi, CapiError, unexpected};
use crate::agent::fleet::{Control, ControlReply};
use crate::api::params::Params;
use crate::api::placement::wire::{placement_request, view};

impl Capi {
    async fn placement_reply(&self, cmd: Control) -> Result<Value, CapiError> {
        match self.fleet.control(cmd).await? {
            ControlReply::Placement(p) => Ok(json!({"GameServerSessionPlacement": view(&p)})),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn start_placement(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let request = placement_request(map)?;
        self.placement_reply(Control::StartPlacement(Box::new(request)))
            .await
    }

    pub(super) async fn describe_placement(
        &self,
        map: Map<String, Value>,
    ) -> Result<Value, CapiError> {
        let p = Params::new(map, &["PlacementId"])?;
        let id = p.str("PlacementId", 48)?;
        self.placement_reply(Control::DescribePlacement(id)).await
    }

    pub(super) async fn stop_placement(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["PlacementId"])?;
        let id = p.str("PlacementId", 48)?;
        self.placement_reply(Control::StopPlacement(id)).await
    }
}
