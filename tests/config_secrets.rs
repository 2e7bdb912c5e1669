//! What the command line prints about a configuration never includes a secret: a parse error
//! names the key, line and column but not the line's text, and the warning about a short token
//! names the endpoint's key, not the token.

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
fn a_misspelt_secret_key_is_named_but_its_value_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"[amqp]
urls = ["amqp://127.0.0.1"]

[[endpoint]]
name    = "peddler-nl"
provider = "peddler"
path    = "/webhooks/peddler"
secrett = "fake-s3cr3t-value"
"#,
    );
    for cmd in ["check-config", "serve"] {
        let out = bridge()
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} accepted the file");
        assert!(
            !stdout.contains("fake-s3cr3t-value") && !stderr.contains("fake-s3cr3t-value"),
            "{cmd} printed the secret: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("endpoint[0].secrett") && stderr.contains("line 8, column 1"),
            "{cmd}: {stderr}"
        );
    }
}

#[test]
fn check_config_warns_about_short_tokens_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"[amqp]
urls = ["amqp://127.0.0.1"]

[[endpoint]]
name     = "modexpress-main"
provider = "modexpress"
path     = "/webhooks/modexpress"
secret   = "env:WB_SHORT_TOKEN"
"#,
    );
    let out = bridge()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("WB_SHORT_TOKEN", "fake-tok-9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning: endpoint[0].secret") && l.contains("16 bytes")),
        "{stdout}"
    );
    assert!(!stdout.contains("fake-tok-9") && !stderr.contains("fake-tok-9"));
}
