//! The `msh` command line.

mod cli;
mod report;

use std::process::ExitCode;

use clap::Parser;

// Training frees and re-allocates large tensors at every op: glibc's malloc returns them to
// the kernel each time (page faults, TLB shootdowns), mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_device_select();
    tracing_subscriber::fmt()
        // Probing for a GPU where there is none makes wgpu's HAL log errors; they are not ours.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MSH_LOG").unwrap_or_else(|_| "warn,wgpu_hal=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()))
        .init();
    // `msh blocks list | head` closes stdout early: end quietly, as other tools do.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.contains("Broken pipe")) {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("msh: error: {}", cli::printable(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Colour only for a terminal, and never where NO_COLOR is set (<https://no-color.org>).
fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Mesa's device-select Vulkan layer (Debian's mesa-vulkan-drivers installs it) asks the
/// Wayland and X servers for the default GPU whenever adapters are listed, and prints
/// `error: XDG_RUNTIME_DIR is invalid or not set` where there is no display, as on servers
/// and in containers. msh ranks adapters itself, so the layer is off unless the user set
/// NODEVICE_SELECT.
fn quiet_device_select() {
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: the first thing `main` does, before any thread exists that could read the
        // environment at the same time.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("NODEVICE_SELECT", "1")
        };
    }
}
