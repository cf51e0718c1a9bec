//! A block pack that misbehaves on purpose, one way per block name; `good` behaves. The
//! host's sandbox tests call each in turn and then `good` again.

use msh_plugin_sdk::prelude::*;

struct Hostile;

const NAMES: [&str; 14] = [
    "good",
    "loop",
    "alloc",
    "panic",
    "cycle",
    "mismatch",
    "unknown_op",
    "huge",
    "io",
    "bad_rank",
    "wide",
    "overflow",
    "padding",
    "params",
];

fn good() -> BlockGraph {
    let mut g = GraphBuilder::new("good");
    g.op("dense", vec![int("units", 8)]);
    g.op("relu", vec![]);
    g.build()
}

/// Tries every capability a plugin must not have; reports what happened.
fn probe_capabilities() -> String {
    let file = std::fs::read_to_string("/etc/hostname").map(|s| s.len());
    let dir = std::fs::read_dir(".").map(|d| d.count());
    let socket = std::net::TcpStream::connect("127.0.0.1:22").map(|_| ());
    let env = std::env::vars().count();
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
    format!("file={file:?} dir={dir:?} socket={socket:?} env={env} clock={clock:?}")
}

impl Guest for Hostile {
    fn blocks() -> Vec<BlockInfo> {
        NAMES
            .iter()
            .map(|n| BlockInfo {
                name: n.to_string(),
                description: format!("misbehaves: {n}"),
                params: vec![],
                input_ranks: vec![1],
            })
            .collect()
    }

    fn build(name: String, _input_shape: Vec<u32>, _params: Vec<Param>) -> Result<BlockGraph, String> {
        match name.as_str() {
            "good" => Ok(good()),
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            }
            "alloc" => {
                // 4 GiB in 64 MiB pieces (one wasm32 allocation cannot exceed 2 GiB).
                let chunks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 64 << 20]).collect();
                Err(format!("allocated {} chunks", std::hint::black_box(chunks).len()))
            }
            "panic" => panic!("deliberate panic in build"),
            "cycle" => {
                let mut g = GraphBuilder::new("cycle");
                g.op_from("relu", vec![], &[2]);
                g.op_from("relu", vec![], &[1]);
                Ok(g.build())
            }
            "mismatch" => {
                let mut g = GraphBuilder::new("mismatch");
                g.op("dense", vec![int("units", 3)]);
                g.op_from("add", vec![], &[0, 1]);
                Ok(g.build())
            }
            "unknown_op" => {
                let mut g = GraphBuilder::new("unknown_op");
                g.op("conv9d", vec![]);
                Ok(g.build())
            }
            "huge" => {
                let mut g = GraphBuilder::new(&"x".repeat(8 << 20));
                for _ in 0..100_000 {
                    g.op("identity", vec![]);
                }
                Ok(g.build())
            }
            "io" => Err(probe_capabilities()),
            "bad_rank" => {
                let mut g = GraphBuilder::new("bad_rank");
                g.op("conv1d", vec![int("filters", 4), int("kernel", 3)]);
                Ok(g.build())
            }
            // Sizes meant to overflow shape arithmetic or exhaust the host's memory.
            "wide" => {
                let mut g = GraphBuilder::new("wide");
                g.op("dense", vec![int("units", 1 << 40)]);
                Ok(g.build())
            }
            "overflow" => {
                let mut g = GraphBuilder::new("overflow");
                g.op("reshape", vec![ints("shape", &[1 << 23, 1 << 23, 1 << 23])]);
                Ok(g.build())
            }
            "padding" => {
                let mut g = GraphBuilder::new("padding");
                g.op("flatten", vec![]);
                g.op("reshape", vec![ints("shape", &[1, 8])]);
                g.op("conv1d", vec![int("filters", 1), int("kernel", 1), int("padding", i64::MAX / 2)]);
                Ok(g.build())
            }
            "params" => {
                let mut g = GraphBuilder::new("params");
                g.op("dense", vec![int("units", 1 << 24)]);
                g.op("dense", vec![int("units", 1 << 24)]);
                Ok(g.build())
            }
            other => Err(format!("unknown block `{other}`")),
        }
    }
}

export_block_pack!(Hostile);
