//! Host bindings generated from the WIT contract (plugin-sdk/wit), one module per world.

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

/// The WIT types, shared by both worlds.
pub use block_pack::msh::plugin::types;
