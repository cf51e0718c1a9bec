//! Write msh plugins in plain Rust: implement `Guest`, call the export macro.
//!
//! Enable the `block-pack` or the `searcher` feature (one per plugin crate) and build for
//! `wasm32-wasip2`. The WIT contract is `wit/plugin.wit`; its types are re-exported here
//! with helpers: graph builders, typed parameter access, a seeded RNG, and for searchers
//! the `Search` trait, duplicate tracking and rank-aware moves over the search space.

#[cfg(all(feature = "block-pack", feature = "searcher"))]
compile_error!("a plugin is a block pack or a searcher: enable one of the two features");

#[cfg(feature = "block-pack")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "block-pack",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_block_pack",
        default_bindings_module: "msh_plugin_sdk::bindings",
    });
}

#[cfg(feature = "searcher")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "searcher",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_searcher",
        default_bindings_module: "msh_plugin_sdk::bindings",
        // So that a searcher's state (trials, the space, proposals) can be a snapshot.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

#[cfg(feature = "block-pack")]
pub use bindings::export_block_pack;

#[cfg(any(feature = "block-pack", feature = "searcher"))]
mod helpers;
#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub use helpers::*;

/// serde, for searchers whose state derives `Serialize` and `Deserialize` (snapshots).
#[cfg(feature = "searcher")]
pub use serde;

#[cfg(feature = "searcher")]
mod search;
#[cfg(feature = "searcher")]
pub use search::*;
#[cfg(feature = "searcher")]
mod surrogate;
#[cfg(feature = "searcher")]
pub use surrogate::*;

/// The WIT package version this SDK builds plugins against.
pub const WIT_VERSION: &str = "0.3.0";
