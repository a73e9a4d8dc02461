//! Every scenario on tokio: server and client on one multi-threaded tokio runtime.

use asp_tokio::Tokio;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

macro_rules! tokio_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            runtime().block_on(async {
                let rt = Tokio::current();
                adapter_tests::bounded(&rt, adapter_tests::$name(rt.clone(), rt.clone())).await;
            });
        }
    )*};
}

adapter_tests::for_each_scenario!(tokio_tests);
