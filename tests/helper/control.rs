//! A `gse-control` replica on a temp dir, its endpoints read from `--endpoints-file`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::wait_for;

pub const CONTROL: &str = env!("CARGO_BIN_EXE_gse-control");

/// The TC3 key every test replica accepts.
pub const KEY: (&str, &str) = ("AKIDcontroltest", "control-test-secret-key");

pub struct Control {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub api: SocketAddr,
    pub relay: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz` (every test replica serves them).
    pub metrics: SocketAddr,
}

impl Control {
    /// Starts a replica on `database` with `extra` control.yaml lines; returns once it serves.
    pub fn start(database: &str, extra: &str) -> Control {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        std::fs::write(&keys, format!("{} {}\n", KEY.0, KEY.1)).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(
            dir.path().join("control.yaml"),
            format!(
                "database: {database}\napi-listen: 127.0.0.1:0\nrelay-listen: 127.0.0.1:0\nmetrics-listen: 127.0.0.1:0\napi-keys-file: {}\n{extra}",
                keys.display()
            ),
        )
        .unwrap();
        let mut c = Control {
            dir,
            child: None,
            api: "127.0.0.1:1".parse().unwrap(),
            relay: "127.0.0.1:1".parse().unwrap(),
            metrics: "127.0.0.1:1".parse().unwrap(),
        };
        c.spawn();
        c
    }

    /// Starts the replica (again).
    pub fn spawn(&mut self) {
        let endpoints = self.dir.path().join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("control.err"))
            .unwrap();
        let child = Command::new(CONTROL)
            .args(["run", "--config"])
            .arg(self.dir.path().join("control.yaml"))
            .arg("--endpoints-file")
            .arg(&endpoints)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start gse-control");
        self.child = Some(child);
        let v: Value = wait_for("gse-control's endpoints", || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gse-control exited early ({status}): {}", self.stderr());
            }
            serde_json::from_str(&std::fs::read_to_string(&endpoints).ok()?).ok()
        });
        self.api = v["api"].as_str().unwrap().parse().unwrap();
        self.relay = v["relay"].as_str().unwrap().parse().unwrap();
        self.metrics = v["metrics"].as_str().unwrap().parse().unwrap();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control.err")).unwrap_or_default()
    }

    /// The official SDK pointed at this replica.
    pub fn sdk(&self) -> super::tencent::Client {
        super::tencent::Client {
            endpoint: self.api.to_string(),
            secret_id: KEY.0.into(),
            secret_key: KEY.1.into(),
        }
    }

    /// `http://<relay>` for an agent's upstream.endpoint.
    pub fn relay_url(&self) -> String {
        format!("http://{}", self.relay)
    }

    /// SIGKILLs the replica.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(mut c) = self.child.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
