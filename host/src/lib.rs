//! msh: neural architecture search with sandboxed WebAssembly plugins and native burn
//! trainers. This crate is the host: block-graph IR, model builder, data, training and
//! the plugin sandbox.

pub mod arch_file;
pub mod atomic_file;
pub mod data;
pub mod engine;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod graph;
mod http;
pub mod model;
pub mod onnx;
pub mod plugin;
pub mod report;
pub mod store;
pub mod train;
pub mod workflow;
