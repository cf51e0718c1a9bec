//! Host bindings generated from the WIT contract (plugin-sdk/wit), one module per world,
//! plus the frozen searcher worlds of 0.2.0 and 0.1.0 (plugin-sdk/wit-VERSION) for
//! plugins built against them. Block packs of every version have the same shape, so one
//! binding serves all.

pub mod block_pack {
    wasmtime::component::bindgen!({
        world: "block-pack",
        path: "../../../plugin-sdk/wit",
    });
}

pub mod searcher {
    wasmtime::component::bindgen!({
        world: "searcher",
        path: "../../../plugin-sdk/wit",
        with: { "msh:plugin/types": super::block_pack::msh::plugin::types },
    });
}

/// The searcher of msh:plugin@0.2.0: the 0.3.0 resource without `save` and `restore`. Its
/// types are the same records, so it shares the current ones.
pub mod searcher_v2 {
    wasmtime::component::bindgen!({
        world: "searcher",
        path: "../../../plugin-sdk/wit-0.2.0",
        with: { "msh:plugin/types": super::block_pack::msh::plugin::types },
    });
}

/// The stateless searcher of msh:plugin@0.1.0: the whole history in every call.
pub mod searcher_v1 {
    wasmtime::component::bindgen!({
        world: "searcher",
        path: "../../../plugin-sdk/wit-0.1.0",
    });
}

/// The WIT types, shared by both worlds.
pub use block_pack::msh::plugin::types;
