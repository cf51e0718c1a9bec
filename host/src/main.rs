//! The `msh` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

// Training frees and re-allocates large tensors at every op: glibc's malloc returns them to
// the kernel each time (page faults, TLB shootdowns), mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Probing for a GPU where there is none makes wgpu's HAL log errors; they are not ours.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MSH_LOG").unwrap_or_else(|_| "warn,wgpu_hal=off".into()),
        )
        .with_writer(std::io::stderr)
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
