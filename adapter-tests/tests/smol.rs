//! Every scenario on smol: server tasks on smol's global executor, the scenario itself in
//! `smol::block_on`.

use asp_smol::Smol;

macro_rules! smol_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            smol::block_on(adapter_tests::bounded(&Smol, adapter_tests::$name(Smol, Smol)));
        }
    )*};
}

adapter_tests::for_each_scenario!(smol_tests);
