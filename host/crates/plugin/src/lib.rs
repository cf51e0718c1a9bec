//! The wasmtime host for plugins: loading components, the version handshake, sandboxed
//! calls, and checking what plugins return. Every failure is a `PluginError` naming the
//! plugin, its contract version and the call.

mod bindings;
mod convert;
pub mod oci;
mod packs;
mod sandbox;
mod search;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use bindings::block_pack::BlockPack;
use bindings::types;
pub use packs::{OciPack, PackEntry, PackError, PackStore};
use sandbox::Sandbox;
pub use search::SearchSession;

/// What the fuzz targets feed plugin outputs through: the contract's types and their
/// conversion into the host's graph IR.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::bindings::types;
    pub use crate::convert::{block_graph, trial};
}

use msh_graph::{self as graph, BlockGraph};
use msh_vocab::ParamValue;
use msh_vocab::space::BlockInfo;

/// The contract versions this host speaks: plugin-sdk/wit, and the frozen ones beside it.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.3.0", "0.2.0", "0.1.0"];
const PACKAGE: &str = "msh:plugin/types@";

// `EMBEDDED`: the plugins built into msh (written by build.rs from its list).
include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Bounds on every call into a plugin.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Fuel per call (about one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
    /// Largest block graph (nodes) or proposal list a call may return.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { fuel: 2_000_000_000, memory_bytes: 256 << 20, max_items: 4096 }
    }
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    BlockPack,
    Searcher,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::BlockPack => "block-pack",
            World::Searcher => "searcher",
        })
    }
}

/// A plugin failure, with the plugin and call it happened in.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` (msh:plugin@{version}), {call}: {reason}")]
pub struct PluginError {
    pub plugin: String,
    pub version: String,
    pub call: String,
    pub reason: String,
}

/// Compiles components (once per content hash) and hands out sandboxed plugins.
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<Sandbox>>,
    limits: Limits,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
}

impl PluginHost {
    pub fn new(limits: Limits) -> Self {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).expect("a fuel-metered engine is a valid configuration");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links once into a fresh linker");
        Self { engine, linker: Arc::new(linker), limits, compiled: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One of the plugins built into `msh`.
    pub fn embedded(&self, name: &str) -> Result<Plugin, PluginError> {
        let (_, bytes) = EMBEDDED.iter().find(|(n, _)| *n == name).ok_or_else(|| PluginError {
            plugin: name.into(),
            version: "?".into(),
            call: "load".into(),
            reason: format!(
                "no built-in plugin of that name (built in: {})",
                EMBEDDED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        })?;
        self.load_bytes(name, bytes)
    }

    pub fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let name =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        let bytes = std::fs::read(path).map_err(|e| PluginError {
            plugin: name.clone(),
            version: "?".into(),
            call: "load".into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        self.load_bytes(&name, &bytes)
    }

    /// Compiles (or reuses) the component, checks its contract version and world.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let fail = |version: &str, reason: String| PluginError {
            plugin: name.into(),
            version: version.into(),
            call: "load".into(),
            reason,
        };
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let cached = self.compiled.lock().expect("no panics while holding the cache").get(&digest).cloned();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| fail("?", format!("not a WebAssembly component: {}", chain(&e))))?;
                self.compiled.lock().expect("no panics while holding the cache").insert(digest, c.clone());
                c
            }
        };
        let ty = component.component_type();
        let version = ty
            .imports(&self.engine)
            .find_map(|(import, _)| import.strip_prefix(PACKAGE).map(str::to_string))
            .ok_or_else(|| fail("?", "does not use the msh:plugin contract (no msh:plugin/types import)".into()))?;
        if !SUPPORTED_VERSIONS.iter().any(|v| compatible(v, &version)) {
            return Err(fail(
                &version,
                format!("built against msh:plugin@{version}; this msh supports {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        // 0.1.0 searchers export `propose`; later ones the `search` interface.
        let world = if exports.iter().any(|e| e == "propose" || e.starts_with("msh:plugin/search@")) {
            World::Searcher
        } else if exports.iter().any(|e| e == "build") && exports.iter().any(|e| e == "blocks") {
            World::BlockPack
        } else {
            return Err(fail(
                &version,
                format!("exports neither a block pack nor a searcher (exports: {})", exports.join(", ")),
            ));
        };
        Ok(Plugin {
            name: name.into(),
            version,
            world,
            sha256: hex(&digest),
            component,
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            limits: self.limits,
        })
    }
}

/// Same major version, and for 0.x the same minor (semver's rule).
fn compatible(supported: &str, found: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().unwrap_or(u64::MAX)).collect::<Vec<_>>();
    let (s, f) = (parts(supported), parts(found));
    match (s.as_slice(), f.as_slice()) {
        ([0, sm, ..], [0, fm, ..]) => sm == fm,
        ([s_major, ..], [f_major, ..]) => s_major == f_major,
        _ => false,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An error and its causes on one line.
fn chain(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

/// A loaded plugin; every call gets a fresh, bounded store.
#[derive(Clone)]
pub struct Plugin {
    pub name: String,
    /// The contract version it was built against.
    pub version: String,
    pub world: World,
    pub sha256: String,
    component: Component,
    engine: Engine,
    linker: Arc<Linker<Sandbox>>,
    limits: Limits,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("world", &self.world)
            .finish()
    }
}

impl Plugin {
    fn error(&self, call: &str, reason: String) -> PluginError {
        PluginError { plugin: self.name.clone(), version: self.version.clone(), call: call.into(), reason }
    }

    /// Explains a failed call: traps by kind, limits by name.
    fn call_error(&self, call: &str, e: wasmtime::Error) -> PluginError {
        let reason = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => format!("exceeded its CPU budget of {} fuel", self.limits.fuel),
            Some(trap) => format!("trapped: {trap} ({})", chain(&e)),
            // StoreLimits' refusal (trap_on_grow_failure) is an error, not a `Trap`.
            None if chain(&e).contains("growing memory") => {
                format!("exceeded its memory limit of {} MiB: {}", self.limits.memory_bytes >> 20, chain(&e))
            }
            None => chain(&e),
        };
        self.error(call, reason)
    }

    fn expect_world(&self, call: &str, world: World) -> Result<(), PluginError> {
        if self.world != world {
            return Err(self.error(call, format!("is a {}, not a {world}", self.world)));
        }
        Ok(())
    }

    /// The blocks a pack offers.
    pub fn blocks(&self) -> Result<Vec<BlockInfo>, PluginError> {
        self.expect_world("blocks()", World::BlockPack)?;
        let mut store = sandbox::store(&self.engine, &self.limits);
        let pack = BlockPack::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| self.call_error("instantiate", e))?;
        let blocks = pack.call_blocks(&mut store).map_err(|e| self.call_error("blocks()", e))?;
        if blocks.len() > self.limits.max_items {
            return Err(self.error(
                "blocks()",
                format!("returned {} blocks, more than the limit of {}", blocks.len(), self.limits.max_items),
            ));
        }
        Ok(blocks.into_iter().map(convert::block_info_from).collect())
    }

    /// Builds block `block` for `input_shape` and checks the graph it returns.
    pub fn build(
        &self,
        block: &str,
        input_shape: &[usize],
        params: &[(String, ParamValue)],
    ) -> Result<BlockGraph, PluginError> {
        let call = format!("build({block}, {input_shape:?})");
        self.expect_world(&call, World::BlockPack)?;
        let mut store = sandbox::store(&self.engine, &self.limits);
        let pack = BlockPack::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| self.call_error("instantiate", e))?;
        let shape: Vec<u32> = input_shape.iter().map(|&d| d as u32).collect();
        let params: Vec<types::Param> =
            params.iter().map(|(name, v)| types::Param { name: name.clone(), value: convert::value(v) }).collect();
        let graph = pack
            .call_build(&mut store, block, &shape, &params)
            .map_err(|e| self.call_error(&call, e))?
            .map_err(|reason| self.error(&call, format!("refused: {reason}")))?;
        if graph.nodes.len() > self.limits.max_items {
            return Err(self.error(
                &call,
                format!("returned {} nodes, more than the limit of {}", graph.nodes.len(), self.limits.max_items),
            ));
        }
        let graph = convert::block_graph(graph)
            .map_err(|reason| self.error(&call, format!("returned an invalid graph: {reason}")))?;
        graph::infer_block(&graph, 0, input_shape)
            .map_err(|e| self.error(&call, format!("returned an invalid graph: {e}")))?;
        Ok(graph)
    }
}
