//! Host bindings generated from the WIT contract (plugin-sdk/wit), one module per world,
//! plus the frozen 0.1.0 searcher world (plugin-sdk/wit-0.1.0) for plugins built against
//! it. Block packs of 0.1.0 and 0.2.0 have the same shape, so one binding serves both.

pub mod block_pack {
    wasmtime::component::bindgen!({
        world: "block-pack",
        path: "../plugin-sdk/wit",
    });
}

pub mod searcher {
    wasmtime::component::bindgen!({
        world: "searcher",
        path: "../plugin-sdk/wit",
        with: { "msh:plugin/types": super::block_pack::msh::plugin::types },
    });
}

/// The stateless searcher of msh:plugin@0.1.0: the whole history in every call.
pub mod searcher_v1 {
    wasmtime::component::bindgen!({
        world: "searcher",
        path: "../plugin-sdk/wit-0.1.0",
    });
}

/// The WIT types, shared by both worlds.
pub use block_pack::msh::plugin::types;
