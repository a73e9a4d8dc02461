//! `cargo test -p conformance`: every vector in process against `asp-proto`, and the live
//! session vectors against an `asp-tokio` and an `asp-smol` server over WebSocket.

use std::time::Duration;

use conformance::{
    default_expected_failures, default_vectors_dir, load, profile, run_files, run_live,
    ExpectedFailures, LiveOptions, Summary,
};

fn report(name: &str, out: Vec<u8>, sum: Summary) {
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert_eq!(
        sum.failed, 0,
        "{name}: {} vectors failed (see the lines marked FAIL above)",
        sum.failed
    );
    assert!(sum.passed > 0, "{name}: no vectors ran");
}

fn expected_failures() -> ExpectedFailures {
    ExpectedFailures::load(&default_expected_failures()).expect("expected-failures.json")
}

#[test]
fn all_vectors_in_process() {
    let files = load(&[default_vectors_dir()]).expect("vectors");
    let kinds: Vec<&str> = files.iter().map(|f| f.kind()).collect();
    for k in ["frames", "rejections", "sessions"] {
        assert!(kinds.contains(&k), "no {k} vectors found");
    }
    let mut out = Vec::new();
    let sum = run_files(&files, &expected_failures(), &mut out);
    sum.finish(&mut out);
    report("in process", out, sum);
}

fn live_options(url: String) -> LiveOptions {
    let mut o = LiveOptions::new(url);
    o.timeout = Duration::from_secs(2);
    o
}

/// A runtime for the live runner.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The live session vectors against the asp-tokio server `builder` makes (on the runtime),
/// with the profile's tools on 127.0.0.1:0; `options` adjusts the runner's options for it.
fn live_against_tokio_server(
    name: &str,
    builder: impl FnOnce() -> asp_tokio::ServerBuilder,
    options: impl FnOnce(&mut LiveOptions),
) {
    let rt = runtime();
    let files = load(&[default_vectors_dir()]).expect("vectors");
    let xf = expected_failures();
    let (out, sum) = rt.block_on(async {
        let mut b = builder();
        for t in profile::tools() {
            b = b.tool(t);
        }
        let server = b.start().await.expect("asp-tokio server on 127.0.0.1:0");
        let mut opts = live_options(server.url());
        options(&mut opts);
        let mut out = Vec::new();
        let sum = run_live(&files, &opts, &xf, &mut out).await;
        server.shutdown(Duration::from_millis(200)).await;
        (out, sum)
    });
    let mut out = out;
    sum.finish(&mut out);
    report(name, out, sum);
}

#[test]
fn live_against_asp_tokio() {
    live_against_tokio_server("live, asp-tokio", asp_tokio::server, |_| {});
}

/// Live mode over `wss://`: the same vectors against an asp-tokio server terminating TLS
/// with a certificate made now, trusted through the options.
#[test]
fn live_against_asp_tokio_over_wss() {
    let ca = adapter_tests::pki::Ca::new("conformance CA");
    live_against_tokio_server(
        "live over wss, asp-tokio",
        || asp_tokio::server().tls(ca.server(&["localhost", "127.0.0.1"]).server_tls()),
        |opts| {
            assert!(opts.url.starts_with("wss://"), "{}", opts.url);
            opts.tls = ca.client_tls();
        },
    );
}

#[test]
fn live_against_asp_smol() {
    // The smol server runs on smol's global executor; the runner on its own tokio runtime.
    let mut b = asp_smol::server();
    for t in profile::tools() {
        b = b.tool(t);
    }
    let server = futures::executor::block_on(b.start()).expect("asp-smol server on 127.0.0.1:0");
    let rt = runtime();
    let files = load(&[default_vectors_dir()]).expect("vectors");
    let xf = expected_failures();
    let mut out = Vec::new();
    let sum = rt.block_on(run_live(&files, &live_options(server.url()), &xf, &mut out));
    futures::executor::block_on(server.shutdown(Duration::from_millis(200)));
    sum.finish(&mut out);
    report("live, asp-smol", out, sum);
}
