//! `load ADDRESS CONNECTIONS IN_FLIGHT_PER_CONNECTION SECONDS` (a command, see `commands`):
//! unary ReportCustomData calls from this game process to an SDK server (the agent, or a bare
//! server that answers the same rpc, for the ceiling), as many in flight as asked, over several
//! HTTP/2 connections. Answers calls/s and latency percentiles in microseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gse_agent::proto::ReportCustomDataRequest;
use gse_agent::proto::gse_grpc_sdk_service_client::GseGrpcSdkServiceClient;
use serde_json::{Value, json};

use crate::Sdk;

/// What to run.
pub struct Load {
    target: SocketAddr,
    connections: usize,
    per_connection: usize,
    run_for: Duration,
}

impl Load {
    /// Parses the command's arguments.
    pub fn parse(args: &[&str]) -> Result<Self, String> {
        let [target, connections, per_connection, secs] = args else {
            return Err("load ADDRESS CONNECTIONS IN_FLIGHT SECONDS".into());
        };
        let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s:?}: {e}"));
        Ok(Self {
            target: target.parse().map_err(|e| format!("{target:?}: {e}"))?,
            connections: num(connections)?,
            per_connection: num(per_connection)?,
            run_for: Duration::from_secs(num(secs)? as u64),
        })
    }

    /// Runs on a runtime of its own (two workers, like a game's client would have).
    pub fn run(self) -> Value {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return json!({"error": e.to_string()}),
        };
        rt.block_on(self.drive())
            .unwrap_or_else(|e| json!({"error": e}))
    }

    async fn drive(self) -> Result<Value, String> {
        let mut tasks = Vec::new();
        let start = Instant::now();
        let run_for = self.run_for;
        for _ in 0..self.connections {
            let client = GseGrpcSdkServiceClient::connect(format!("http://{}", self.target))
                .await
                .map_err(|e| e.to_string())?;
            for _ in 0..self.per_connection {
                let mut c = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(100_000);
                    while start.elapsed() < run_for {
                        let req = Sdk::req(ReportCustomDataRequest {
                            current_custom_count: 1,
                            max_custom_count: 2,
                        });
                        let t = Instant::now();
                        let resp = c
                            .report_custom_data(req)
                            .await
                            .map_err(|e| e.to_string())?
                            .into_inner();
                        lat.push(t.elapsed());
                        if resp.status != 0 {
                            return Err(format!("refused: {}", resp.error_message));
                        }
                    }
                    Ok(lat)
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| e.to_string())??);
        }
        let elapsed = start.elapsed();
        all.sort();
        let us = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0, |d| d.as_micros() as u64)
        };
        Ok(json!({
            "calls": all.len(),
            "calls_per_s": all.len() as f64 / elapsed.as_secs_f64(),
            "in_flight": self.connections * self.per_connection,
            "p50_us": us(0.50),
            "p99_us": us(0.99),
            "max_us": all.last().map_or(0, |d| d.as_micros() as u64),
        }))
    }
}
