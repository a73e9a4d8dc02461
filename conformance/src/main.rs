//! `cargo run -p conformance -- [PATH ...]`: runs vector files or folders (default: all of
//! `conformance/vectors`) against `asp-proto`, one line per vector, then `N passed, N failed`.
//!
//! `--against ws://HOST:PORT/PATH [--role client]`: plays the live session vectors against
//! a running ASP server; the runner is the client.
//!
//! `--serve HOST:PORT`: runs an `asp-tokio` server offering the live profile's tools, to
//! play live mode against by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use conformance::{default_expected_failures, default_vectors_dir, load, run_files};
use conformance::{run_live, ExpectedFailures, LiveOptions};

const USAGE: &str = "\
usage: conformance [OPTIONS] [PATH ...]

Runs ASP conformance vectors (files or folders; default: conformance/vectors).

options:
  --against URL              play the live session vectors against the ASP server at URL
                             (ws://HOST:PORT/PATH or wss://…, subprotocol asp-v1)
  --ca FILE                  live mode, wss://: trust the CAs in this PEM file (default:
                             the platform's roots)
  --role client              the role the runner plays in live mode (only `client`: the
                             vectors of role `server` test the remote server)
  --timeout-ms N             live mode: how long to wait for each expected frame (5000)
  --expected-failures FILE   known failures, {\"vector id\": \"reason\"}
                             (default: conformance/expected-failures.json)
  --serve HOST:PORT          run an asp-tokio server with the live profile's tools
  -h, --help                 this text";

struct Args {
    paths: Vec<PathBuf>,
    against: Option<String>,
    timeout: Duration,
    xf: PathBuf,
    serve: Option<String>,
    ca: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        paths: Vec::new(),
        against: None,
        timeout: Duration::from_secs(5),
        xf: default_expected_failures(),
        serve: None,
        ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--against" => a.against = Some(value("--against")?),
            "--role" => {
                let r = value("--role")?;
                if r != "client" {
                    return Err(format!(
                        "--role {r}: live mode can only play the client (it connects to URL)"
                    ));
                }
            }
            "--timeout-ms" => {
                let v = value("--timeout-ms")?;
                let ms: u64 = v.parse().map_err(|_| format!("--timeout-ms {v}"))?;
                a.timeout = Duration::from_millis(ms);
            }
            "--expected-failures" => a.xf = PathBuf::from(value("--expected-failures")?),
            "--ca" => a.ca = Some(PathBuf::from(value("--ca")?)),
            "--serve" => a.serve = Some(value("--serve")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            p => a.paths.push(PathBuf::from(p)),
        }
    }
    if a.paths.is_empty() {
        a.paths.push(default_vectors_dir());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = args.serve {
        return serve(&addr);
    }
    let files = match load(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let xf = match ExpectedFailures::load(&args.xf) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    let sum = match args.against {
        None => run_files(&files, &xf, &mut out),
        Some(url) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut opts = LiveOptions::new(url);
            opts.timeout = args.timeout;
            if let Some(ca) = &args.ca {
                opts.tls = match asp_tokio::ClientTls::new()
                    .roots(asp_tokio::Roots::Empty)
                    .ca_pem_file(ca)
                {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: --ca: {e}");
                        return ExitCode::from(2);
                    }
                };
            }
            rt.block_on(run_live(&files, &opts, &xf, &mut out))
        }
    };
    sum.finish(&mut out);
    if sum.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn serve(addr: &str) -> ExitCode {
    let addr: std::net::SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --serve {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let mut b = asp_tokio::server().bind(addr);
        for t in conformance::profile::tools() {
            b = b.tool(t);
        }
        match b.start().await {
            Ok(server) => {
                println!("serving the live profile at {}", server.url());
                let _ = tokio::signal::ctrl_c().await;
                server.shutdown(Duration::from_secs(1)).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
