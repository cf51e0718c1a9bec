//! msh's end-to-end tests, one module per area, linked into one test binary so that burn,
//! wasmtime and PostgreSQL's client are linked once: the real `msh` binary, real LMDB and
//! PostgreSQL stores, real wasm plugins and real training on small real data.

mod common;

mod cli;
mod fetch;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod inputs;
mod model;
mod oci;
mod onnx;
mod plugins;
mod report;
mod run;
mod sdk_tutorial;
mod sharing;
mod snapshots;
mod store;
mod tidy;
mod train;
mod workers;
mod workflows;
