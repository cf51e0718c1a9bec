//! The store every plugin call runs in: no WASI capabilities, bounded fuel and memory.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::Limits;

/// Per-call state: a WASI context that grants nothing, and the memory limiter.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A clock stopped at zero: plugins must not depend on time.
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A fresh store for one call. Rust's standard library on wasm32-wasip2 imports WASI
/// interfaces, so they are linked, but with no files, sockets, environment or clock, and
/// randomness fixed, so a plugin's answers depend only on its inputs.
pub fn store(engine: &wasmtime::Engine, limits: &Limits) -> Store<Sandbox> {
    let wasi = WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .wall_clock(Frozen)
        .monotonic_clock(Frozen)
        .secure_random(Xoshiro256PlusPlus::seed_from_u64(0))
        .insecure_random(Xoshiro256PlusPlus::seed_from_u64(1))
        .insecure_random_seed(0)
        .build();
    let state = Sandbox {
        wasi,
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(8)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_fuel(limits.fuel).expect("fuel is enabled on every engine");
    store
}
