//! The hyper-parameters trainers understand, declared once: each one's name as searchers
//! and workflows give it, the values it may take, and how a value sets a `TrainConfig`.
//! Validation, `trial_config`, the fuzz targets and the docs' list all read this table.

use msh_train::{MAX_BATCH_SIZE, MAX_EPOCHS, OptimizerKind, TrainConfig};

/// The values one hyper-parameter may take; a workflow's range must lie inside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HparamDomain {
    pub low: f64,
    pub high: f64,
    /// Zero makes no sense (a rate, a clip norm): `low` itself is outside.
    pub low_open: bool,
    pub integer: bool,
}

/// One searchable hyper-parameter.
#[derive(Debug, Clone, Copy)]
pub struct Hparam {
    pub name: &'static str,
    pub domain: HparamDomain,
    /// Sets a trial's training configuration from a value of the domain.
    pub apply: fn(&mut TrainConfig, f64),
}

/// `optimizer` is searched as an index into this list.
pub const OPTIMIZERS: [OptimizerKind; 4] =
    [OptimizerKind::Adam, OptimizerKind::Sgd, OptimizerKind::Rmsprop, OptimizerKind::Adagrad];

const fn domain(low: f64, high: f64, low_open: bool, integer: bool) -> HparamDomain {
    HparamDomain { low, high, low_open, integer }
}

/// Every hyper-parameter the trainers understand.
pub const HPARAMS: [Hparam; 7] = [
    Hparam {
        name: "learning_rate",
        domain: domain(0.0, 10.0, true, false),
        apply: |config, v| config.learning_rate = v,
    },
    Hparam {
        name: "batch_size",
        domain: domain(1.0, MAX_BATCH_SIZE as f64, false, true),
        apply: |config, v| config.batch_size = (v.round() as usize).max(1),
    },
    Hparam {
        name: "epochs",
        domain: domain(1.0, MAX_EPOCHS as f64, false, true),
        apply: |config, v| config.epochs = (v.round() as usize).max(1),
    },
    Hparam {
        name: "optimizer",
        domain: domain(0.0, (OPTIMIZERS.len() - 1) as f64, false, true),
        apply: |config, v| config.optimizer = OPTIMIZERS[(v.round().max(0.0) as usize).min(OPTIMIZERS.len() - 1)],
    },
    Hparam { name: "l2", domain: domain(0.0, 10.0, false, false), apply: |config, v| config.l2 = v as f32 },
    Hparam {
        name: "gradient_clip",
        domain: domain(0.0, 1e6, true, false),
        apply: |config, v| config.gradient_clip = Some(v as f32),
    },
    Hparam {
        name: "lr_decay_rate",
        domain: domain(0.0, 1.0, true, false),
        apply: |config, v| config.lr_decay_rate = Some(v),
    },
];

/// The hyper-parameter called `name`, if trainers understand one.
pub fn hparam(name: &str) -> Option<&'static Hparam> {
    HPARAMS.iter().find(|h| h.name == name)
}

/// The names of `HPARAMS`, in order.
pub fn hparam_names() -> impl Iterator<Item = &'static str> {
    HPARAMS.iter().map(|h| h.name)
}

/// Where `value` falls outside hyper-parameter `name`'s domain: the reason.
pub fn hparam_outside_domain(name: &str, value: f64) -> Option<String> {
    let HparamDomain { low, high, low_open, integer } = hparam(name)?.domain;
    let above_low = if low_open { value > low } else { value >= low };
    let kind = if integer { "an integer" } else { "a number" };
    let bound = if low_open { format!("({low}, {high}]") } else { format!("[{low}, {high}]") };
    (!(value.is_finite() && above_low && value <= high))
        .then(|| format!("`{name}` must be {kind} in {bound}, got {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_of_every_domain_applies() {
        for h in &HPARAMS {
            let HparamDomain { low, high, low_open, .. } = h.domain;
            let inside = if low_open { high } else { low };
            assert_eq!(hparam_outside_domain(h.name, inside), None, "{}", h.name);
            assert!(hparam_outside_domain(h.name, high * 2.0 + 1.0).is_some(), "{}", h.name);
            let mut config = TrainConfig::default();
            (h.apply)(&mut config, high);
            assert!(config.check().is_ok(), "{} at {high}: {:?}", h.name, config.check());
        }
    }

    #[test]
    fn the_readme_lists_every_hyper_parameter() {
        let readme = include_str!("../../../../../README.md");
        for name in hparam_names() {
            assert!(readme.contains(name), "README.md does not mention hyper-parameter `{name}`");
        }
    }
}
