//! GSE's cloud actions that have no meaning on a self-hosted host: each is answered
//! `UnsupportedOperation` with what to do instead, never `InvalidAction` (the action exists;
//! this host does it another way).

/// What to do instead of `action`, if it is one of GSE's actions this API does not serve.
pub fn instead(action: &str) -> Option<&'static str> {
    Some(match action {
        "CreateAsset"
        | "CreateAssetWithImage"
        | "DeleteAsset"
        | "DescribeAsset"
        | "DescribeAssets"
        | "DescribeAssetSystems"
        | "UpdateAsset"
        | "GetUploadCredentials"
        | "GetUploadFederationToken"
        | "UpdateBucketAccelerateOpt"
        | "UpdateBucketCORSOpt" => {
            "there is no asset store on a self-hosted host: a build (zip or directory) is installed from the `build:` setting of agent.yaml at start, or by a control plane's DeployBuild command"
        }
        "CreateFleet" | "CopyFleet" | "DeleteFleet" | "StartFleetActions" | "StopFleetActions" => {
            "a fleet is the `fleet-id` its hosts' agents run: start gse-agent with that id on a host to add it, stop the service to remove it"
        }
        "DescribeFleetCapacity"
        | "UpdateFleetCapacity"
        | "PutScalingPolicy"
        | "DeleteScalingPolicy"
        | "DescribeScalingPolicies"
        | "PutTimerScalingPolicy"
        | "DeleteTimerScalingPolicy"
        | "DescribeTimerScalingPolicies" => {
            "capacity is the hosts you run: add hosts running gse-agent, or drain one (SetDraining through the control plane) to scale in without ending matches"
        }
        "DescribeInstanceTypes"
        | "DescribeInstanceLimit"
        | "DescribeUserQuota"
        | "DescribeUserQuotas" => "no cloud instance types or quotas apply to self-hosted machines",
        "AttachCcnInstances"
        | "DetachCcnInstances"
        | "DescribeCcnInstances"
        | "DescribeFleetPortSettings"
        | "UpdateFleetPortSettings" => {
            "networking is the host's own: open the games' client ports in the host firewall"
        }
        "DescribeFleetStatisticDetails"
        | "DescribeFleetStatisticFlows"
        | "DescribeFleetStatisticSummary"
        | "DescribeFleetRelatedResources" => {
            "use DescribeFleetUtilization and the events (DescribeFleetEvents, or the upstream relay)"
        }
        "GetInstanceAccess" => {
            "log in to the host with your own access (SSH); the agent hands out no credentials"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_only_action_says_what_to_do_instead() {
        for action in [
            "CreateAsset",
            "CreateFleet",
            "PutScalingPolicy",
            "GetInstanceAccess",
        ] {
            assert!(instead(action).is_some_and(|s| s.len() > 40), "{action}");
        }
        assert_eq!(instead("CreateGameServerSession"), None);
        assert_eq!(instead("NoSuchAction"), None);
    }
}
