//! Training progress: a bar on a terminal, one plain line per epoch when piped.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use msh_train::TrainEvent;

/// Reports training events on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    quiet: bool,
}

impl Progress {
    pub fn new(epochs: usize, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self { bar, epochs, quiet }
    }

    pub fn on_event(&mut self, event: TrainEvent<'_>) {
        match event {
            TrainEvent::Batch { epoch, batch, batches, loss } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(batches as u64);
                    bar.set_prefix(format!("epoch {epoch}/{}", self.epochs));
                    bar.set_position(batch as u64);
                    bar.set_message(format!("loss {loss:.4}"));
                }
            }
            TrainEvent::Epoch(report) => {
                let line = format!(
                    "epoch {}/{}  train loss {:.4}  valid loss {:.4}  {}  lr {:.2e}  {:.1}s",
                    report.epoch,
                    self.epochs,
                    report.train_loss,
                    report.valid.loss,
                    report.valid.headline(),
                    report.learning_rate,
                    report.seconds
                );
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None if !self.quiet => eprintln!("{line}"),
                    None => {}
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
