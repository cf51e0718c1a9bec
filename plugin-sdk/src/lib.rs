//! Write msh plugins in plain Rust: a block pack implements [`pack::Guest`] and calls
//! [`export_block_pack!`](prelude::export_block_pack); a searcher implements
//! [`Search`](search::Search) and calls [`export_search!`].
//!
//! Enable the `block-pack` or the `searcher` feature (one per plugin crate) and build for
//! `wasm32-wasip2`. The WIT contract is `wit/plugin.wit`; its types are [`types`]. Most
//! plugins need one import, [`prelude`]; the rest is organised by what it is about:
//!
//! - [`graph`]: block graphs ([`GraphBuilder`](graph::GraphBuilder)) and parameter lists
//!   ([`Params`](graph::Params)); [`ops`]: one typed builder per primitive op the host
//!   accepts; [`pack`]: the block pack's side of the contract.
//! - [`search`]: the searcher's side: [`Search`](search::Search), snapshots, trial identity
//!   ([`Seen`](search::Seen)) and ranking ([`Beam`](search::Beam));
//!   [`settings`](mod@settings): settings declared once ([`settings!`]).
//! - [`space`]: the search space, its blocks, parameters and ranks, and random draws;
//!   [`moves`]: neighbours, mutations and growth; [`surrogate`]: searchers built on a model
//!   of the objective.
//! - [`rng`]: the seeded generator every plugin draws from.

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

/// The contract's types (both worlds share them): spaces, trials, proposals, block
/// graphs, parameters.
#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub mod types {
    pub use crate::bindings::msh::plugin::types::*;
}

#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub mod graph;
#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub mod ops;
#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub mod rng;

/// The block pack's side of the contract: implement [`Guest`] (the blocks and how each is
/// built) and export it with [`export_block_pack!`].
#[cfg(feature = "block-pack")]
pub mod pack {
    pub use crate::bindings::Guest;
    pub use crate::bindings::export_block_pack;
}

#[cfg(feature = "searcher")]
pub mod moves;
#[cfg(feature = "searcher")]
pub mod search;
#[cfg(feature = "searcher")]
pub mod settings;
#[cfg(feature = "searcher")]
pub mod space;
#[cfg(feature = "searcher")]
pub mod surrogate;

/// serde, for searchers whose state derives `Serialize` and `Deserialize` (snapshots).
#[cfg(feature = "searcher")]
pub use serde;

/// What a typical block pack or searcher imports with one `use msh_plugin_sdk::prelude::*`:
/// the contract's types, graph building and parameters, the generator, and for searchers
/// the [`Search`](crate::search::Search) trait, trial tracking, settings, the space and
/// moves. The model-based helpers stay in [`surrogate`](crate::surrogate).
#[cfg(any(feature = "block-pack", feature = "searcher"))]
pub mod prelude {
    pub use crate::graph::{GraphBuilder, Params, flag, float, int, ints, text};
    pub use crate::ops;
    pub use crate::rng::Rng;
    pub use crate::types::*;

    #[cfg(feature = "block-pack")]
    pub use crate::pack::{Guest, export_block_pack};

    #[cfg(feature = "searcher")]
    pub use crate::export_search;
    #[cfg(feature = "searcher")]
    pub use crate::moves::*;
    #[cfg(feature = "searcher")]
    pub use crate::search::{
        Beam, Search, Seen, is_scored, restore_keeping_rng, restore_state, save_state, score, trial_key,
    };
    #[cfg(feature = "searcher")]
    pub use crate::settings::{Settings, config, setting};
    #[cfg(feature = "searcher")]
    pub use crate::space::*;
    #[cfg(feature = "searcher")]
    pub use serde;
}

/// The WIT package version this SDK builds plugins against.
pub const WIT_VERSION: &str = "0.3.0";
