//! Tencent's official Python SDK (`tencentcloud-sdk-python-gse`, pinned), in a virtual
//! environment made once under `target/tmp`, driving the agent as a studio's backend would.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// The SDK version the tests pin (it still carries every GSE model).
pub const SDK_VERSION: &str = "3.0.1416";

/// The virtual environment's python, made once (see [`super::cached_dir`]).
pub fn python() -> PathBuf {
    let venv = super::cached_dir(&format!("tencent-sdk-{SDK_VERSION}"), |venv| {
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what} failed (.ci/run installs python3-venv; PyPI must be reachable):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(venv),
            "python3 -m venv",
        );
        run(
            Command::new(venv.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("tencentcloud-sdk-python-common=={SDK_VERSION}"),
                &format!("tencentcloud-sdk-python-gse=={SDK_VERSION}"),
            ]),
            "pip install tencentcloud-sdk-python-gse",
        );
    });
    venv.join("bin/python")
}

/// One SDK client: an endpoint and a key.
pub struct Client {
    pub endpoint: String,
    pub secret_id: String,
    pub secret_key: String,
}

impl Client {
    /// Runs `calls` (`[(action, params)]`) through the SDK in one process; one answer each:
    /// `{"ok": response}` or `{"error": {"code", "message"}}`.
    pub fn run(&self, calls: &[(&str, Value)]) -> Vec<Value> {
        self.run_plan(
            calls
                .iter()
                .map(|(a, p)| json!({"action": a, "params": p}))
                .collect(),
        )
    }

    fn run_plan(&self, calls: Vec<Value>) -> Vec<Value> {
        let plan = json!({
            "endpoint": self.endpoint,
            "secret_id": self.secret_id,
            "secret_key": self.secret_key,
            "calls": calls,
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/tencent_sdk.py");
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plan.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the SDK script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// One call that must succeed; its response.
    pub fn ok(&self, action: &str, params: Value) -> Value {
        let answer = self.run(&[(action, params)]).remove(0);
        answer
            .get("ok")
            .cloned()
            .unwrap_or_else(|| panic!("{action}: {answer}"))
    }

    /// One call through the SDK's common client (for extension actions and parameters); its
    /// response, which must not be an error.
    pub fn common(&self, action: &str, params: Value) -> Value {
        let answer = self.common_answer(action, params);
        answer
            .get("ok")
            .cloned()
            .unwrap_or_else(|| panic!("{action}: {answer}"))
    }

    /// One call through the SDK's common client: `{"ok": response}` or `{"error": {code, message}}`.
    pub fn common_answer(&self, action: &str, params: Value) -> Value {
        let plan = json!({"action": action, "params": params, "common": true});
        self.run_plan(vec![plan]).remove(0)
    }

    /// One call that must fail; its error code and message.
    pub fn err(&self, action: &str, params: Value) -> (String, String) {
        let answer = self.run(&[(action, params)]).remove(0);
        let e = answer
            .get("error")
            .unwrap_or_else(|| panic!("{action} succeeded: {answer}"));
        (
            e["code"].as_str().unwrap().to_string(),
            e["message"].as_str().unwrap().to_string(),
        )
    }
}
