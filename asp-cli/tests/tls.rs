//! `asp` over TLS: `asp serve --tls-cert --tls-key`, client commands with `--ca` on
//! `wss://` URLs, each TLS failure an exit 2 naming its cause, and the certificate reloaded
//! on SIGHUP while the server keeps running. Certificates are made at test time (rcgen).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use adapter_tests::pki::{temp_dir, Ca};
use common::asp_command;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `asp` to its end (bounded by the connect timeout it is given).
fn asp(args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--connect-timeout", "20"];
    all.extend_from_slice(args);
    let out = asp_command(&all).output().expect("run asp");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `asp serve`, read line by line; killed if the test fails.
struct Serve {
    child: Child,
    lines: Receiver<String>,
}

impl Serve {
    fn spawn(args: &[&str]) -> Serve {
        let mut child = asp_command(args).spawn().expect("spawn asp serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve { child, lines }
    }

    /// `asp --json serve` with this certificate and key, once it listens: (it, its URL).
    fn tls(cert: &std::path::Path, key: &std::path::Path) -> (Serve, String) {
        let serve = Serve::spawn(&[
            "--json",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ]);
        let hello = serve.next_json();
        assert_eq!(hello["type"], "listening", "{hello}");
        let url = hello["url"].as_str().expect("url").to_owned();
        (serve, url)
    }

    fn next_json(&self) -> Value {
        let l = self
            .lines
            .recv_timeout(LIMIT)
            .expect("a line from asp serve");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_tls_call_errors_and_sighup_reload() {
    let dir = temp_dir("cli");
    let (ca, ca2) = (Ca::new("cli CA"), Ca::new("cli CA 2"));
    let ca_file = dir.join("ca.pem");
    let ca2_file = dir.join("ca2.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write");
    std::fs::write(&ca2_file, &ca2.cert_pem).expect("write");
    let (cert, key) = ca.server(&["localhost", "127.0.0.1"]).write(&dir, "server");
    let (ca_s, ca2_s) = (
        ca_file.to_str().expect("utf-8 path"),
        ca2_file.to_str().expect("utf-8 path"),
    );

    let (serve, url) = Serve::tls(&cert, &key);
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");

    let args = r#"{"prompt": "hi", "delay_ms": 0}"#;
    let (code, out, err) = asp(&["call", &url, "agent", "--ca", ca_s, "--args", args]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with("You asked: \"hi\""), "{out}");

    // Untrusted: the platform roots do not know the test CA.
    let (code, _, err) = asp(&["tools", &url]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not trusted"), "{err}");
    // Name mismatch.
    let (code, _, err) = asp(&[
        "tools",
        &url,
        "--ca",
        ca_s,
        "--tls-server-name",
        "example.org",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not valid for \"example.org\""), "{err}");
    // Plaintext to the TLS port.
    let plain = url.replacen("wss://", "ws://", 1);
    let (code, _, err) = asp(&["tools", &plain]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("use wss://"), "{err}");
    // An unreadable CA file is a usage error naming the option.
    let (code, _, err) = asp(&["tools", &url, "--ca", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--ca"), "{err}");

    // SIGHUP: the new certificate (from another CA) serves new connections.
    ca2.server(&["localhost", "127.0.0.1"])
        .write(&dir, "server");
    serve.signal("HUP");
    let reloaded = serve.next_json();
    assert_eq!(reloaded["type"], "tls_reloaded", "{reloaded}");
    let (code, out, err) = asp(&["tools", &url, "--ca", ca2_s]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (code, _, err) = asp(&["tools", &url, "--ca", ca_s]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not trusted"), "{err}");

    serve.signal("INT");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_client_to_a_plaintext_server_exits_2() {
    let serve = Serve::spawn(&["--json", "serve", "--addr", "127.0.0.1:0"]);
    let hello = serve.next_json();
    let url = hello["url"]
        .as_str()
        .expect("url")
        .replacen("ws://", "wss://", 1);
    let (code, _, err) = asp(&["tools", &url]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    serve.signal("INT");
}

/// Issue 20: a server certificate that has expired is a named error: the client commands
/// exit 2 saying so (here `asp serve` is given an expired certificate from a CA the client
/// trusts, so expiry is the only fault); the same server with a valid certificate works.
#[test]
fn expired_server_certificate_exits_2() {
    let dir = temp_dir("cli-expired");
    let ca = Ca::new("cli CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write");
    let (cert, key) = ca
        .expired_server(&["localhost", "127.0.0.1"])
        .write(&dir, "expired");
    let (serve, url) = Serve::tls(&cert, &key);
    let ca_s = ca_file.to_str().expect("utf-8 path");
    for cmd in ["tools", "call"] {
        let mut args = vec![cmd, &url, "--ca", ca_s];
        if cmd == "call" {
            args.extend(["agent", "--args", r#"{"prompt": "hi"}"#]);
        }
        let (code, out, err) = asp(&args);
        assert_eq!(code, Some(2), "asp {cmd}: {out}\n{err}");
        assert!(err.contains("expired"), "asp {cmd} names the cause: {err}");
    }
    serve.signal("INT");
    let _ = std::fs::remove_dir_all(dir);
}
