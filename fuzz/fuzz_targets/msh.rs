//! libFuzzer entry point: runs the msh-fuzz target named by MSH_FUZZ_TARGET.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn target() -> fn(&[u8]) {
    static TARGET: OnceLock<fn(&[u8])> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("MSH_FUZZ_TARGET").unwrap_or_default();
        msh_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = msh_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            panic!("MSH_FUZZ_TARGET=`{name}` is not a target; targets: {}", names.join(", "))
        })
    })
}

fuzz_target!(|data: &[u8]| target()(data));
