//! API key policies in Tencent CAM's own syntax: what one SecretId may do.
//!
//! A policy is CAM's JSON (`{"version": "2.0", "statement": [{"effect": "allow" | "deny",
//! "action": ["gse:Describe*"], "resource": ["qcs::gse::uin/:fleet/fleet-a"]}]}`) or one of
//! the presets `QcloudGSEFullAccess` and `QcloudGSEReadOnlyAccess`. A request is allowed when a
//! statement allows its action on every resource it names and none denies it (deny wins);
//! anything else is Tencent's `UnauthorizedOperation`. Actions and resource ids match with `*`
//! wildcards. Resources name a fleet, alias, queue or asset in CAM's six segments
//! (`qcs:project:service:region:account:type/id`); the region and account segments are not
//! compared (one installation is one account), the service must be `gse`, and `*` is every
//! resource. A request that names no resource matches only statements whose resource is `*`.

use serde::Deserialize;
use serde_json::Value;

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not CAM's JSON shape.
    #[error("the policy is not a CAM policy: {0}")]
    Shape(String),
    /// A statement breaks a rule.
    #[error("statement {index}: {message}")]
    Statement {
        /// 0-based statement index.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// A request the policy refused: the action and the resource it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "you are not authorized to perform operation (gse:{action}) on resource ({resource}): the SecretId's policy does not allow it"
)]
pub struct Denied {
    /// The action.
    pub action: String,
    /// The resource, in CAM's form (`*` when the request names none).
    pub resource: String,
}

/// One resource a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `fleet`, `alias`, `queue` or `asset`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
}

impl Resource {
    fn cam(&self) -> String {
        format!("qcs::gse:::{}/{}", self.kind, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Every resource.
    All,
    /// `type/id` with wildcards.
    Typed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    allow: bool,
    /// Action names without `gse:`, with wildcards, lowercased.
    actions: Vec<String>,
    resources: Vec<Pattern>,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy(Vec<Statement>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: String,
    statement: Vec<RawStatement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    effect: String,
    action: OneOrMany,
    resource: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// Actions the read-only preset allows.
const READ_ONLY: &[&str] = &["describe*", "list*", "search*", "get*", "resolve*"];

impl Policy {
    /// Full access: every action on every resource.
    pub fn full_access() -> Self {
        Self(vec![Statement {
            allow: true,
            actions: vec!["*".into()],
            resources: vec![Pattern::All],
        }])
    }

    /// A preset by name, or CAM JSON.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        match text.trim() {
            "QcloudGSEFullAccess" => return Ok(Self::full_access()),
            "QcloudGSEReadOnlyAccess" => {
                return Ok(Self(vec![Statement {
                    allow: true,
                    actions: READ_ONLY.iter().map(|a| a.to_string()).collect(),
                    resources: vec![Pattern::All],
                }]));
            }
            _ => {}
        }
        let raw: RawPolicy = serde_json::from_str(text).map_err(|e| {
            PolicyError::Shape(format!(
                "{e} (a policy is QcloudGSEFullAccess, QcloudGSEReadOnlyAccess or CAM's JSON on one line)"
            ))
        })?;
        if raw.version != "2.0" {
            return Err(PolicyError::Shape(format!(
                "version {:?}; CAM policies are version \"2.0\"",
                raw.version
            )));
        }
        let statements = raw
            .statement
            .into_iter()
            .enumerate()
            .map(|(index, s)| statement(index, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(statements))
    }

    /// Whether `action` (e.g. `CreateGameServerSession`) may be done on `resources`.
    pub fn decide(&self, action: &str, resources: &[Resource]) -> Result<(), Denied> {
        let action_lc = action.to_ascii_lowercase();
        let acts = |s: &Statement| s.actions.iter().any(|a| glob(a, &action_lc));
        let covers = |s: &Statement, r: Option<&Resource>| {
            s.resources.iter().any(|p| match (p, r) {
                (Pattern::All, _) => true,
                (Pattern::Typed(t), Some(r)) => glob(t, &format!("{}/{}", r.kind, r.id)),
                (Pattern::Typed(_), None) => false,
            })
        };
        let targets: Vec<Option<&Resource>> = if resources.is_empty() {
            vec![None]
        } else {
            resources.iter().map(Some).collect()
        };
        for r in targets {
            let denied = self.0.iter().any(|s| !s.allow && acts(s) && covers(s, r));
            let allowed = self.0.iter().any(|s| s.allow && acts(s) && covers(s, r));
            if denied || !allowed {
                return Err(Denied {
                    action: action.to_string(),
                    resource: r.map(Resource::cam).unwrap_or_else(|| "*".into()),
                });
            }
        }
        Ok(())
    }
}

fn statement(index: usize, s: RawStatement) -> Result<Statement, PolicyError> {
    let bad = |message: String| PolicyError::Statement { index, message };
    let allow = match s.effect.to_ascii_lowercase().as_str() {
        "allow" => true,
        "deny" => false,
        other => return Err(bad(format!("effect {other:?} is not allow or deny"))),
    };
    let actions = s
        .action
        .into_vec()
        .into_iter()
        .map(|a| {
            if a == "*" {
                return Ok("*".to_string());
            }
            match a.split_once(':') {
                Some((service, name))
                    if service.eq_ignore_ascii_case("gse") && !name.is_empty() =>
                {
                    Ok(name.to_ascii_lowercase())
                }
                _ => Err(bad(format!(
                    "action {a:?} is not gse:NAME (with * wildcards) or *"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let resources = s
        .resource
        .into_vec()
        .into_iter()
        .map(|r| resource_pattern(&r).map_err(|m| bad(format!("resource {r:?}: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if actions.is_empty() || resources.is_empty() {
        return Err(bad("names no action or no resource".into()));
    }
    Ok(Statement {
        allow,
        actions,
        resources,
    })
}

fn resource_pattern(r: &str) -> Result<Pattern, &'static str> {
    if r == "*" {
        return Ok(Pattern::All);
    }
    let parts: Vec<&str> = r.splitn(6, ':').collect();
    let [qcs, _project, service, _region, _account, typed] = parts[..] else {
        return Err("not CAM's six segments qcs:project:service:region:account:type/id");
    };
    if qcs != "qcs" {
        return Err("does not start with qcs:");
    }
    if !(service == "gse" || service == "*") {
        return Err("its service is not gse");
    }
    match typed.split_once('/') {
        Some((kind, id))
            if ["fleet", "alias", "queue", "asset", "*"].contains(&kind) && !id.is_empty() =>
        {
            Ok(Pattern::Typed(typed.to_string()))
        }
        _ if typed == "*" => Ok(Pattern::All),
        _ => Err("its resource is not fleet/ID, alias/ID, queue/NAME, asset/ID or *"),
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The resources a request of `action` names: fleets (`FleetId`, `FleetIds`, and the fleet in
/// a `GameServerSessionId` ARN), aliases, queues (`GameServerSessionQueueName`, and `Name` or
/// `Names` of the queue actions), assets.
pub fn resources_of(action: &str, params: &serde_json::Map<String, Value>) -> Vec<Resource> {
    let mut out = Vec::new();
    let mut add = |kind: &'static str, v: Option<&Value>| {
        let mut push = |s: &str| {
            if !s.is_empty() {
                out.push(Resource {
                    kind,
                    id: s.to_string(),
                });
            }
        };
        match v {
            Some(Value::String(s)) => push(s),
            Some(Value::Array(items)) => {
                for i in items {
                    if let Value::String(s) = i {
                        push(s);
                    }
                }
            }
            _ => {}
        }
    };
    add("fleet", params.get("FleetId"));
    add("fleet", params.get("FleetIds"));
    add("alias", params.get("AliasId"));
    add("queue", params.get("GameServerSessionQueueName"));
    if action.contains("GameServerSessionQueue") {
        add("queue", params.get("Name"));
        add("queue", params.get("Names"));
    }
    add("asset", params.get("AssetId"));
    // Fleets named inside: an alias's routing, a queue's destinations.
    add(
        "fleet",
        params.get("RoutingStrategy").and_then(|r| r.get("FleetId")),
    );
    if let Some(Value::Array(destinations)) = params.get("Destinations") {
        for d in destinations {
            if let Some(Value::String(arn)) = d.get("DestinationArn")
                && let Some(fleet) = arn.split(['/', ':']).find(|p| p.starts_with("fleet-"))
            {
                out.push(Resource {
                    kind: "fleet",
                    id: fleet.to_string(),
                });
            }
        }
    }
    if let Some(Value::String(gss)) = params.get("GameServerSessionId")
        && let Some(fleet) = gss.split('/').find(|p| p.starts_with("fleet-"))
    {
        out.push(Resource {
            kind: "fleet",
            id: fleet.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(id: &str) -> Resource {
        Resource {
            kind: "fleet",
            id: id.into(),
        }
    }

    #[test]
    fn wildcards_match_and_deny_wins() {
        let p = Policy::parse(
            r#"{"version":"2.0","statement":[
                {"effect":"allow","action":["gse:*"],"resource":["qcs::gse::uin/100:fleet/fleet-a*"]},
                {"effect":"deny","action":"gse:EndGameServerSessionAndProcess","resource":"*"},
                {"effect":"allow","action":"gse:ListFleets","resource":"*"}]}"#,
        )
        .unwrap();
        assert!(
            p.decide("CreateGameServerSession", &[fleet("fleet-a1")])
                .is_ok()
        );
        let d = p
            .decide("CreateGameServerSession", &[fleet("fleet-b")])
            .unwrap_err();
        assert_eq!(d.resource, "qcs::gse:::fleet/fleet-b");
        assert!(
            p.decide("EndGameServerSessionAndProcess", &[fleet("fleet-a1")])
                .is_err(),
            "deny wins"
        );
        assert!(p.decide("ListFleets", &[]).is_ok());
        assert!(p.decide("DescribeAlias", &[]).is_err(), "names nothing *");
        // Every resource named must be allowed.
        assert!(
            p.decide(
                "DescribeFleetAttributes",
                &[fleet("fleet-a1"), fleet("fleet-x")]
            )
            .is_err()
        );
    }

    #[test]
    fn presets_and_refusals() {
        let ro = Policy::parse("QcloudGSEReadOnlyAccess").unwrap();
        assert!(
            ro.decide("DescribeGameServerSessions", &[fleet("f")])
                .is_ok()
        );
        assert!(ro.decide("SearchGameServerSessions", &[]).is_ok());
        let d = ro
            .decide("CreateGameServerSession", &[fleet("fleet-a")])
            .unwrap_err();
        assert!(d.to_string().contains("gse:CreateGameServerSession"), "{d}");
        assert!(
            Policy::parse("QcloudGSEFullAccess")
                .unwrap()
                .decide("DeleteAlias", &[])
                .is_ok()
        );
        for (bad, said) in [
            ("{", "not a CAM policy"),
            (r#"{"version":"1.0","statement":[]}"#, "version"),
            (
                r#"{"version":"2.0","statement":[{"effect":"maybe","action":"*","resource":"*"}]}"#,
                "effect",
            ),
            (
                r#"{"version":"2.0","statement":[{"effect":"allow","action":"cvm:RunInstances","resource":"*"}]}"#,
                "gse:NAME",
            ),
            (
                r#"{"version":"2.0","statement":[{"effect":"allow","action":"*","resource":"qcs::cvm:::instance/x"}]}"#,
                "service is not gse",
            ),
            (
                r#"{"version":"2.0","statement":[{"effect":"allow","action":"*","resource":"*","condition":{}}]}"#,
                "condition",
            ),
        ] {
            let e = Policy::parse(bad).unwrap_err().to_string();
            assert!(e.contains(said), "{bad}: {e}");
        }
    }

    #[test]
    fn requests_name_their_resources() {
        let params = serde_json::json!({
            "GameServerSessionId": "qcs::gse:local::gameserversession/fleet-a/gssess-1",
            "AliasId": "alias-1",
        });
        let r = resources_of("DescribeGameServerSessions", params.as_object().unwrap());
        assert_eq!(
            r,
            [
                Resource {
                    kind: "alias",
                    id: "alias-1".into()
                },
                fleet("fleet-a")
            ]
        );
        let routed = serde_json::json!({
            "Name": "q-1",
            "RoutingStrategy": {"Type": "SIMPLE", "FleetId": "fleet-prod"},
            "Destinations": [{"DestinationArn": "qcs::gse:local::fleet/fleet-b"}],
        });
        let named: Vec<String> =
            resources_of("CreateGameServerSessionQueue", routed.as_object().unwrap())
                .into_iter()
                .map(|r| format!("{}/{}", r.kind, r.id))
                .collect();
        assert_eq!(named, ["queue/q-1", "fleet/fleet-prod", "fleet/fleet-b"]);
        let queue = serde_json::json!({"Name": "q-1"});
        assert_eq!(
            resources_of("DeleteGameServerSessionQueue", queue.as_object().unwrap())[0].kind,
            "queue"
        );
        assert!(resources_of("CreateGameServerSession", queue.as_object().unwrap()).is_empty());
    }

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("*", "", true),
            ("describe*", "describefleets", true),
            ("d*s", "describefleets", true),
            ("d*x", "describefleets", false),
            ("a", "ab", false),
        ] {
            assert_eq!(glob(p, t), m, "{p} {t}");
        }
    }
}
