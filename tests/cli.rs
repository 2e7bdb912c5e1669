//! The command line: `--version`, `check-config` output with secrets redacted, and bad configs
//! exiting non-zero with a message naming the key.

use std::process::Command;

fn bridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_webhook-bridge"))
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn version_prints_the_crate_version() {
    let out = bridge().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("webhook-bridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_lists_endpoints_and_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("peddler.secret");
    std::fs::write(&secret_file, "fake-file-secret-42\n").unwrap();
    let path = write_config(
        &dir,
        &format!(
            r#"
[amqp]
urls = ["amqp://guest:fake-amqp-password@127.0.0.1:5672/%2f"]

[[endpoint]]
name = "wegocod-ma"
provider = "wegocod"
path = "/webhooks/wegocod"
secret = "env:WB_CLI_TEST_SECRET"

[[endpoint]]
name = "peddler-nl"
provider = "peddler"
path = "/webhooks/peddler"
secret = ["file:{}", "fake-literal-secret-7"]
"#,
            secret_file.display()
        ),
    );
    let out = bridge()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WB_CLI_TEST_SECRET", "fake-env-secret-99")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("wegocod-ma") && stdout.contains("/webhooks/wegocod"));
    assert!(stdout.contains("wegocod.order.status_changed"));
    assert!(stdout.contains("peddler.shipment.status_changed"));
    assert!(stdout.contains("auth=hmac") && stdout.contains("auth=header"));
    assert!(stdout.contains("env:WB_CLI_TEST_SECRET"));
    for secret in [
        "fake-env-secret-99",
        "fake-file-secret-42",
        "fake-literal-secret-7",
        "fake-amqp-password",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ack_deadline = \"soon\"\n[amqp]\nurls = [\"amqp://127.0.0.1\"]\n",
            "ack_deadline",
        ),
        (
            "[amqp]\nurls = [\"http://127.0.0.1\"]\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='x'\n",
            "amqp.urls[0]",
        ),
        (
            "[amqp]\nurls = [\"amqp://127.0.0.1\"]\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\n",
            "endpoint[0].secret",
        ),
        (
            "[amqp]\nurls = [\"amqp://127.0.0.1\"]\n[[endpoint]]\nname='a'\nprovider='nosuch'\npath='/p'\nsecret='x'\n",
            "provider",
        ),
        (
            "[amqp]\nurls = [\"amqp://127.0.0.1\"]\n[[endpoint]]\nname='a'\nprovider='peddler'\npath='/p'\nsecret='x'\nallow_ips=['not-an-ip']\n",
            "endpoint[0].allow_ips",
        ),
    ];
    for (text, key) in cases {
        let path = write_config(&dir, text);
        for cmd in ["check-config", "serve"] {
            let out = bridge()
                .args([cmd, "--config"])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted a bad config: {text}");
            assert!(stderr.contains(key), "{cmd}: {key} not named in: {stderr}");
        }
    }
    let out = bridge()
        .args(["check-config", "--config", "/nonexistent/bridge.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bridge.toml"));
}
