//! The official OpenAI Python SDK (`pip install openai`) against the AI gateway in front of a
//! fake Anthropic server: non-streaming, streaming with `include_usage`, typed errors.
//! The script is `tests/sdk/openai_sdk.py`. Skipped, saying so, only when
//! `python3 -c "import openai"` fails.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use common::*;
use llm_fakes::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sdk_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn openai_python_sdk_against_anthropic() {
    if !sdk_available() {
        println!(
            "SKIPPED openai_python_sdk_against_anthropic: the openai Python package is not installed (pip install openai)"
        );
        return;
    }
    let fake = Fake::start(Kind::Anthropic).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("anthropic.key");
    std::fs::write(&key, ANTHROPIC_KEY).unwrap();
    let port = free_port();
    let body = format!(
        r#"[[listeners]]
name = "http"
address = "127.0.0.1"
port = {port}
protocol = "HTTP"

[llm_backends.claude]
provider = "anthropic"
model = "claude-sonnet-4-5"
endpoint = "{url}"
api_key_file = {key:?}

[[llm_routes]]
name = "chat"
listeners = ["http"]
backends = [{{ backend = "claude" }}]
"#,
        url = fake.url(),
        key = key.display().to_string(),
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        // Loopback only, whatever proxy the environment names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Poll (the fake server runs on this test's runtime, so never block it).
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.unwrap_or_else(|| panic!("the SDK script timed out\n{stdout}\n{stderr}"));
    assert!(
        status.success() && stdout.contains("sdk ok"),
        "SDK script failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // One plain, two streaming and two failing requests reached the provider.
    assert_eq!(fake.count(), 5);
}
