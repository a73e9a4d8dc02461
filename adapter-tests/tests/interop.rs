//! Every scenario across runtimes: a tokio server with a smol client, and a smol server with
//! a tokio client. The raw-socket scenarios then use the client runtime's WebSocket
//! (async-tungstenite against a tokio server, tokio-tungstenite against a smol server).

use asp_smol::Smol;
use asp_tokio::Tokio;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Server on a tokio runtime whose worker threads run in the background; the scenario (and
/// the client) in `smol::block_on` on the test thread.
mod tokio_server_smol_client {
    use super::*;

    macro_rules! tests {
        ($($name:ident),* $(,)?) => {$(
            #[test]
            fn $name() {
                let rt = tokio_runtime();
                let server_rt = Tokio::from_handle(rt.handle().clone());
                smol::block_on(adapter_tests::bounded(&Smol, adapter_tests::$name(server_rt, Smol)));
            }
        )*};
    }

    adapter_tests::for_each_scenario!(tests);
}

/// Server on smol's global executor; the scenario (and the client) on a tokio runtime.
mod smol_server_tokio_client {
    use super::*;

    macro_rules! tests {
        ($($name:ident),* $(,)?) => {$(
            #[test]
            fn $name() {
                tokio_runtime().block_on(async {
                    let rt = Tokio::current();
                    adapter_tests::bounded(&rt, adapter_tests::$name(Smol, rt.clone())).await;
                });
            }
        )*};
    }

    adapter_tests::for_each_scenario!(tests);
}
