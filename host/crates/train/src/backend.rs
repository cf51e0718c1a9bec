//! Backend selection at run time: burn's Flex on CPU, burn-wgpu on a real GPU.

use burn::prelude::Device;
use burn::tensor::DeviceKind;
use serde::{Deserialize, Serialize};

/// Which compute backend trains and evaluates models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A real GPU through wgpu when one exists, else the CPU.
    #[default]
    Auto,
    /// burn's Flex backend (multi-threaded, SIMD).
    Cpu,
    /// burn-wgpu on the best GPU adapter, or a software adapter (with a warning).
    Wgpu,
}

/// A device ready for training, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// Human-readable: `cpu (flex)` or `wgpu: NVIDIA H200 (Vulkan)`.
    pub description: String,
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU threads for each of `trainers` trainer processes: the cores shared out evenly, so
/// that trainers never oversubscribe them (at least one thread each).
pub fn threads_per_trainer(trainers: usize) -> usize {
    (cores() / trainers.max(1)).max(1)
}

/// Sizes this process's compute thread pool (burn-flex's kernels and its matmuls run on
/// rayon's global pool). Only the first call can size it; a later call asking for a
/// different size is an error.
pub fn use_threads(threads: usize) -> Result<(), String> {
    if threads == 0 {
        return Err("`threads` must be at least 1".into());
    }
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(_) => Err(format!(
            "cannot use {threads} compute threads: this process already runs {}",
            rayon::current_num_threads()
        )),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("backend `wgpu` was asked for, but {found}; use --backend cpu")]
pub struct NoGpu {
    found: String,
}

impl Backend {
    /// Resolves the choice to a device. Only `auto` and `wgpu` look for adapters, so a
    /// CPU run never loads a GPU driver.
    pub fn select(self) -> Result<Selected, NoGpu> {
        let cpu = || Selected { device: Device::flex(), description: "cpu (flex)".into() };
        match self {
            Backend::Cpu => Ok(cpu()),
            Backend::Auto => Ok(find_gpu(&adapters()).unwrap_or_else(cpu)),
            // Asked for by name, a software adapter (lavapipe, llvmpipe) is better than a
            // refusal: it runs the GPU code path, slowly, where no GPU exists (CI, tests).
            Backend::Wgpu => {
                let adapters = adapters();
                find_gpu(&adapters)
                    .or_else(|| find_software(&adapters))
                    .ok_or_else(|| NoGpu { found: describe_adapters(&adapters) })
            }
        }
    }
}

/// The adapters of the backends burn-wgpu trains on (Vulkan, Metal, DirectX 12). OpenGL
/// is left out: burn does not train there, and probing it connects to a display server
/// (EGL on Wayland), which prints errors on machines without one.
fn adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY)).iter().map(|a| a.get_info()).collect()
}

/// The best real GPU: discrete, then integrated, then virtual. Software adapters such as
/// llvmpipe report `DeviceType::Cpu` and are never chosen here.
fn find_gpu(infos: &[wgpu::AdapterInfo]) -> Option<Selected> {
    let ranked = [
        (wgpu::DeviceType::DiscreteGpu, DeviceKind::DiscreteGpu(0)),
        (wgpu::DeviceType::IntegratedGpu, DeviceKind::IntegratedGpu(0)),
        (wgpu::DeviceType::VirtualGpu, DeviceKind::VirtualGpu(0)),
    ];
    ranked.into_iter().find_map(|(kind, device_kind)| {
        let info = infos.iter().find(|i| i.device_type == kind)?;
        Some(Selected {
            device: Device::wgpu(device_kind),
            description: format!("wgpu: {} ({:?})", info.name, info.backend),
        })
    })
}

/// A software adapter, with a warning: it is correct but much slower than burn's CPU backend.
fn find_software(infos: &[wgpu::AdapterInfo]) -> Option<Selected> {
    let info = infos.iter().find(|i| i.device_type == wgpu::DeviceType::Cpu)?;
    tracing::warn!(
        "no GPU found; wgpu runs on the software adapter {} ({:?}), which is much slower than --backend cpu",
        info.name,
        info.backend
    );
    Some(Selected {
        device: Device::wgpu(DeviceKind::Cpu),
        description: format!("wgpu: {} ({:?}, software)", info.name, info.backend),
    })
}

fn describe_adapters(infos: &[wgpu::AdapterInfo]) -> String {
    if infos.is_empty() {
        return "wgpu finds no adapter, not even a software one".into();
    }
    let found = infos.iter().map(|i| format!("{} is {:?}", i.name, i.device_type)).collect::<Vec<_>>();
    format!("wgpu finds no usable adapter ({})", found.join(", "))
}
