//! The vocabulary every layer of msh shares, and plugins too (the SDK builds it for
//! wasm32): what a model predicts, how well it did, the blocks and parameter values of an
//! architecture, and the canonical text of a trial. No dependency but serde's derives.

pub mod space;

use std::fmt;

use serde::{Deserialize, Serialize};

/// How well a model does on one split. Regression metrics are in target units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub samples: usize,
    /// Mean cross-entropy, or mean squared error on standardised targets.
    pub loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

impl Metrics {
    /// `accuracy 0.953` or `r2 0.512`: the headline number of the task.
    pub fn headline(&self) -> String {
        match (self.accuracy, self.r2) {
            (Some(a), _) => format!("accuracy {a:.4}"),
            (_, Some(r2)) => format!("r2 {r2:.4}"),
            _ => format!("loss {:.4}", self.loss),
        }
    }
}

/// A block parameter value (mirrors the plugin contract's `value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Flag(bool),
    Text(String),
    Ints(Vec<i64>),
}

/// A block of an architecture, by name, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRef {
    pub name: String,
    #[serde(default)]
    pub params: Vec<(String, ParamValue)>,
}

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Task {
    Classification { classes: usize },
    Regression,
}

impl Task {
    /// Width of the task head.
    pub fn outputs(self) -> usize {
        match self {
            Task::Classification { classes } => classes,
            Task::Regression => 1,
        }
    }
}

impl fmt::Display for ParamValue {
    /// The value's text in trial keys and messages: integral floats as integers (`3.0` is
    /// `3`, as a plugin spelling either means one value), lists as `[1, 2]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) if v.fract() == 0.0 && v.abs() < 1e15 => write!(f, "{}", *v as i64),
            ParamValue::Float(v) => write!(f, "{v:?}"),
            ParamValue::Flag(v) => write!(f, "{v}"),
            ParamValue::Text(v) => f.write_str(v),
            ParamValue::Ints(v) => write!(f, "{v:?}"),
        }
    }
}

/// The canonical text of a trial: its blocks in order, each with its parameters sorted by
/// name (those `is_default` says are the block's defaults left out, so that spelling a
/// default out changes nothing), then its hyper-parameters sorted by name. Two proposals
/// with one key are the same experiment: `conv(filters=32;kernel=3),dense|lr=0.001`.
pub fn trial_key(
    architecture: &[BlockRef],
    hparams: &[(String, f64)],
    is_default: impl Fn(&str, &str, &ParamValue) -> bool,
) -> String {
    use fmt::Write as _;
    let mut key = String::new();
    for (i, block) in architecture.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        key.push_str(&block.name);
        let mut params: Vec<(&str, &ParamValue)> = block
            .params
            .iter()
            .filter(|(name, value)| !is_default(&block.name, name, value))
            .map(|(name, value)| (name.as_str(), value))
            .collect();
        params.sort_by(|a, b| a.0.cmp(b.0));
        for (j, (name, value)) in params.iter().enumerate() {
            let _ = write!(key, "{}{name}={value}", if j == 0 { "(" } else { ";" });
        }
        if !params.is_empty() {
            key.push(')');
        }
    }
    let mut hparams: Vec<&(String, f64)> = hparams.iter().collect();
    hparams.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in hparams {
        let _ = write!(key, "|{name}={value:?}");
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, params: &[(&str, ParamValue)]) -> BlockRef {
        BlockRef { name: name.into(), params: params.iter().map(|(n, v)| (n.to_string(), v.clone())).collect() }
    }

    #[test]
    fn keys_sort_parameters_and_hyper_parameters_by_name() {
        let architecture = [
            block("conv", &[("kernel", ParamValue::Int(3)), ("filters", ParamValue::Float(32.0))]),
            block("dense", &[]),
        ];
        let hparams = [("lr".to_string(), 0.001), ("dropout".to_string(), 0.5)];
        assert_eq!(
            trial_key(&architecture, &hparams, |_, _, _| false),
            "conv(filters=32;kernel=3),dense|dropout=0.5|lr=0.001"
        );
    }

    #[test]
    fn defaults_leave_the_key() {
        let architecture = [block("conv", &[("kernel", ParamValue::Int(3)), ("act", ParamValue::Text("relu".into()))])];
        let key = trial_key(&architecture, &[], |b, p, v| b == "conv" && p == "act" && v.to_string() == "relu");
        assert_eq!(key, "conv(kernel=3)");
        assert_eq!(
            trial_key(&[block("conv", &[("act", ParamValue::Text("relu".into()))])], &[], |_, _, _| true),
            "conv"
        );
    }

    #[test]
    fn value_text_spells_integral_floats_as_integers() {
        assert_eq!(ParamValue::Float(3.0).to_string(), "3");
        assert_eq!(ParamValue::Float(0.25).to_string(), "0.25");
        assert_eq!(ParamValue::Ints(vec![1, 2]).to_string(), "[1, 2]");
        assert_eq!(ParamValue::Flag(true).to_string(), "true");
    }
}
