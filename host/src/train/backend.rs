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
    /// burn-wgpu on the best GPU adapter.
    Wgpu,
}

/// A device ready for training, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// Human-readable: `cpu (flex)` or `wgpu: NVIDIA H200 (Vulkan)`.
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
#[error("backend `wgpu` was asked for, but wgpu finds no GPU adapter ({found}); use --backend cpu")]
pub struct NoGpu {
    found: String,
}

impl Backend {
    /// Resolves the choice to a device.
    pub fn select(self) -> Result<Selected, NoGpu> {
        let cpu = || Selected { device: Device::flex(), description: "cpu (flex)".into() };
        match self {
            Backend::Cpu => Ok(cpu()),
            Backend::Auto => Ok(find_gpu().unwrap_or_else(cpu)),
            Backend::Wgpu => find_gpu().ok_or_else(|| NoGpu { found: describe_adapters() }),
        }
    }
}

fn adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::default();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())).iter().map(|a| a.get_info()).collect()
}

/// The best real GPU: discrete, then integrated, then virtual. Software adapters such as
/// llvmpipe report `DeviceType::Cpu` and are never chosen.
fn find_gpu() -> Option<Selected> {
    let infos = adapters();
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

fn describe_adapters() -> String {
    let infos = adapters();
    if infos.is_empty() {
        return "no adapters at all".into();
    }
    infos.iter().map(|i| format!("{} is {:?}", i.name, i.device_type)).collect::<Vec<_>>().join(", ")
}
