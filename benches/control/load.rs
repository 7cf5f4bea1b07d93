//! The API's callers: creates open- and closed-loop, placements, and their summaries.

use super::*;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
}

impl Api {
    pub(crate) fn new(addr: SocketAddr) -> Api {
        Api {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url: format!("http://{addr}/"),
        }
    }

    /// One action; its `Response` or its error's (code, message).
    pub(crate) async fn call(&self, action: &str, body: &Value) -> Result<Value, (String, String)> {
        let sent = self
            .client
            .post(&self.url)
            .header("X-TC-Action", action)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| ("Transport".to_string(), e.to_string()))?;
        let bytes = sent
            .bytes()
            .await
            .map_err(|e| ("Transport".to_string(), e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ("Transport".to_string(), format!("not JSON: {e}")))?;
        let r = v["Response"].clone();
        match r.get("Error") {
            Some(e) => Err((
                e["Code"].as_str().unwrap_or("?").to_string(),
                e["Message"].as_str().unwrap_or_default().to_string(),
            )),
            None => Ok(r),
        }
    }

    pub(crate) async fn create(&self) -> Result<Value, (String, String)> {
        self.call(
            "CreateGameServerSession",
            &json!({"FleetId": FLEET, "MaximumPlayerSessionCount": 10, "Name": "bench"}),
        )
        .await
    }
}

/// One CreateGameServerSession as the caller saw it.
pub(crate) struct Outcome {
    pub(crate) latency: Duration,
    /// The error code, if it failed.
    pub(crate) code: Option<String>,
    /// A LimitExceeded while more processes were free than other calls could take.
    pub(crate) spurious: bool,
    pub(crate) message: String,
}

pub(crate) async fn create_once(api: &Api, shared: &Shared, from: Instant) -> Outcome {
    shared.wanting.fetch_add(1, Ordering::Relaxed);
    let r = api.create().await;
    let latency = from.elapsed();
    // Free processes beyond what every other call under way could still take.
    let others = shared.wanting.fetch_sub(1, Ordering::Relaxed) - 1;
    let spare = shared.idle.load(Ordering::Relaxed) > others;
    match r {
        Ok(_) => Outcome {
            latency,
            code: None,
            spurious: false,
            message: String::new(),
        },
        Err((code, message)) => Outcome {
            latency,
            spurious: code == "LimitExceeded" && spare,
            code: Some(code),
            message,
        },
    }
}

/// `n` creates offered at `rate` per second, at most `in_flight` at once; each latency counts
/// from the call's due time.
pub(crate) async fn open_loop(
    api: &Api,
    shared: &Arc<Shared>,
    n: usize,
    rate: f64,
) -> (Vec<Outcome>, Duration) {
    let gate = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let permit = gate.clone().acquire_owned().await.unwrap();
        let (api, shared) = (api.clone(), shared.clone());
        handles.push(tokio::spawn(async move {
            let o = create_once(&api, &shared, due).await;
            drop(permit);
            o
        }));
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    (out, start.elapsed())
}

/// `n` creates, `k` in flight, each sent as soon as the one before it on its worker returned.
pub(crate) async fn closed_loop(
    api: &Api,
    shared: &Arc<Shared>,
    n: usize,
    k: usize,
) -> (Vec<Outcome>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..k)
        .map(|_| {
            let (api, shared, next) = (api.clone(), shared.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    out.push(create_once(&api, &shared, Instant::now()).await);
                }
                out
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for w in workers {
        out.extend(w.await.unwrap());
    }
    (out, start.elapsed())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A phase's creates, summed up.
#[derive(Clone, Default)]
pub(crate) struct Summary {
    pub(crate) calls: usize,
    pub(crate) ok: usize,
    pub(crate) per_s: f64,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    /// Failures by code, spurious LimitExceeded apart.
    pub(crate) failures: BTreeMap<String, usize>,
    pub(crate) spurious: usize,
    pub(crate) real_limit: usize,
    pub(crate) first_failure: Option<String>,
}

impl Summary {
    pub(crate) fn of(outcomes: &[Outcome], took: Duration) -> Summary {
        let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
        lat.sort();
        let mut s = Summary {
            calls: outcomes.len(),
            ok: outcomes.iter().filter(|o| o.code.is_none()).count(),
            per_s: outcomes.len() as f64 / took.as_secs_f64().max(1e-9),
            p50: percentile(&lat, 0.50),
            p90: percentile(&lat, 0.90),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or_default(),
            ..Default::default()
        };
        for o in outcomes {
            let Some(code) = &o.code else { continue };
            if code == "LimitExceeded" {
                if o.spurious {
                    s.spurious += 1;
                } else {
                    s.real_limit += 1;
                }
            } else {
                *s.failures.entry(code.clone()).or_default() += 1;
            }
            if (code != "LimitExceeded" || o.spurious) && s.first_failure.is_none() {
                s.first_failure = Some(format!("{code}: {}", o.message));
            }
        }
        s
    }

    /// Failures other than real lack of capacity.
    pub(crate) fn bad(&self) -> usize {
        self.failures.values().sum::<usize>() + self.spurious
    }

    pub(crate) fn failures_text(&self) -> String {
        let mut parts: Vec<String> = self
            .failures
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if self.spurious > 0 {
            parts.push(format!(
                "LimitExceeded with free processes left {}",
                self.spurious
            ));
        }
        if self.real_limit > 0 {
            parts.push(format!(
                "LimitExceeded, capacity exhausted {}",
                self.real_limit
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            let mut t = parts.join(", ");
            if let Some(f) = &self.first_failure {
                t.push_str(&format!(" (first: {f})"));
            }
            t
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, {} ok, {:.0}/s; latency p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; failures: {}",
            self.calls,
            self.ok,
            self.per_s,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.failures_text()
        )
    }
}

/// Starts `m` placements evenly over `over`, each polled until it leaves PENDING; returns
/// (client-seen Start → FULFILLED, other endings by status).
pub(crate) async fn placements(
    api: &Api,
    shared: &Arc<Shared>,
    m: usize,
    over: Duration,
    prefix: &str,
) -> (Vec<Duration>, BTreeMap<String, usize>) {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(PLACEMENT_IN_FLIGHT));
    let mut handles = Vec::with_capacity(m);
    for i in 0..m {
        let due = start + over.mul_f64(i as f64 / m.max(1) as f64);
        tokio::time::sleep_until(due).await;
        let (api, shared, gate) = (api.clone(), shared.clone(), gate.clone());
        let id = format!("{prefix}-{i}");
        handles.push(tokio::spawn(async move {
            shared.wanting.fetch_add(1, Ordering::Relaxed);
            let r = place(&api, &gate, &id).await;
            shared.wanting.fetch_sub(1, Ordering::Relaxed);
            r
        }));
    }
    let mut fulfilled = Vec::new();
    let mut other = BTreeMap::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(d) => fulfilled.push(d),
            Err(e) => *other.entry(e).or_default() += 1,
        }
    }
    fulfilled.sort();
    (fulfilled, other)
}

/// One placement, started then described every [`PLACEMENT_POLL`] until it leaves PENDING; each
/// call under `gate`.
pub(crate) async fn place(api: &Api, gate: &Semaphore, id: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let permit = gate.acquire().await.unwrap();
    let started = api
        .call(
            "StartGameServerSessionPlacement",
            &json!({
                "PlacementId": id,
                "GameServerSessionQueueName": "bench",
                "MaximumPlayerSessionCount": 2,
                "DesiredPlayerSessions": [{"PlayerId": format!("player-{id}")}],
            }),
        )
        .await;
    drop(permit);
    if let Err((code, _)) = started {
        return Err(format!("start {code}"));
    }
    let deadline = t + Duration::from_secs(60);
    loop {
        tokio::time::sleep(PLACEMENT_POLL).await;
        let permit = gate.acquire().await.unwrap();
        let d = api
            .call(
                "DescribeGameServerSessionPlacement",
                &json!({"PlacementId": id}),
            )
            .await;
        drop(permit);
        match d {
            Ok(v) => match v["GameServerSessionPlacement"]["Status"].as_str() {
                Some("FULFILLED") => return Ok(t.elapsed()),
                Some("PENDING") => {}
                other => return Err(other.unwrap_or("?").to_string()),
            },
            Err((code, _)) => return Err(format!("describe {code}")),
        }
        if Instant::now() > deadline {
            return Err("still PENDING after 60 s".into());
        }
    }
}
