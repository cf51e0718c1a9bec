//! Data sets: providers (CSV, CIFAR-10 binary, image folders, NumPy arrays), downloads,
//! splits, normalisation and batches. Every bad input is a `DataError` naming the file and
//! row or record.

pub mod cifar;
pub mod csv_source;
pub mod fetch;
mod images;
pub mod numpy;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use msh_graph::Shape;
use msh_vocab::Task;

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {reason}", path.display())]
    Row { path: PathBuf, line: u64, reason: String },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Spec(String),
}

/// Where samples come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    /// A CSV file of numeric columns, one of them the label.
    Csv(PathBuf),
    /// A directory with CIFAR-10's binary files (`data_batch_1.bin` .. `test_batch.bin`).
    Cifar10(PathBuf),
    /// A directory with one sub-directory of PNG/JPEG images per class.
    Images(PathBuf),
    /// Features and targets as two NumPy `.npy` files.
    Npy { features: PathBuf, targets: PathBuf },
    /// Features and targets as two arrays of one NumPy `.npz` file (`x` and `y` by default).
    Npz { path: PathBuf, arrays: [String; 2] },
}

impl FromStr for Source {
    type Err = DataError;

    /// Parses `csv:PATH`, `cifar10:DIR`, `images:DIR`, `npy:FEATURES.npy,TARGETS.npy`,
    /// `npz:FILE.npz` or `npz:FILE.npz:FEATURES,TARGETS`.
    fn from_str(text: &str) -> Result<Self, DataError> {
        const FORMATS: &str =
            "csv:PATH, cifar10:DIR, images:DIR, npy:FEATURES.npy,TARGETS.npy or npz:FILE.npz[:FEATURES,TARGETS]";
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| DataError::Spec(format!("data source `{text}` needs a format: {FORMATS}")))?;
        let path = PathBuf::from(rest);
        match kind {
            "csv" => Ok(Source::Csv(path)),
            "cifar10" => Ok(Source::Cifar10(path)),
            "images" => Ok(Source::Images(path)),
            "npy" => match rest.split_once(',') {
                Some((features, targets)) if !features.is_empty() && !targets.is_empty() => {
                    Ok(Source::Npy { features: features.into(), targets: targets.into() })
                }
                _ => Err(DataError::Spec(format!("`{text}` needs two arrays: npy:FEATURES.npy,TARGETS.npy"))),
            },
            "npz" => {
                // A trailing `:A,B` names the arrays; anything else is part of the path.
                let named = rest.rsplit_once(':').and_then(|(path, names)| {
                    let (x, y) = names.split_once(',')?;
                    let plain = |n: &str| !n.is_empty() && !n.contains(['/', '\\', ',']);
                    (plain(x) && plain(y)).then(|| (path, [x.to_string(), y.to_string()]))
                });
                let (path, arrays) = named.unwrap_or((rest, numpy::DEFAULT_ARRAYS.map(String::from)));
                Ok(Source::Npz { path: path.into(), arrays })
            }
            other => Err(DataError::Spec(format!("unknown data format `{other}` in `{text}`: expected {FORMATS}"))),
        }
    }
}

impl TryFrom<String> for Source {
    type Error = DataError;
    fn try_from(text: String) -> Result<Self, DataError> {
        text.parse()
    }
}

impl Source {
    /// The same source with relative paths taken from `base`.
    pub fn relative_to(&self, base: &Path) -> Source {
        match self {
            Source::Csv(p) => Source::Csv(base.join(p)),
            Source::Cifar10(p) => Source::Cifar10(base.join(p)),
            Source::Images(p) => Source::Images(base.join(p)),
            Source::Npy { features, targets } => {
                Source::Npy { features: base.join(features), targets: base.join(targets) }
            }
            Source::Npz { path, arrays } => Source::Npz { path: base.join(path), arrays: arrays.clone() },
        }
    }

    /// Why the data is not where this source says, with what to do about it.
    pub fn missing(&self) -> Option<String> {
        let file = |p: &Path| (!p.is_file()).then(|| format!("data file {} does not exist", p.display()));
        match self {
            Source::Csv(p) | Source::Npz { path: p, .. } => file(p),
            Source::Npy { features, targets } => file(features).or_else(|| file(targets)),
            Source::Cifar10(dir) if !fetch::is_complete(&fetch::CIFAR10, dir) => Some(format!(
                "CIFAR-10 is not at {}: run `msh data fetch cifar10 --dir {}`, or set `fetch: true` under \
                 `data:` to download it on the first run",
                dir.display(),
                dir.parent().map_or_else(|| ".".into(), |p| p.display().to_string())
            )),
            Source::Images(dir) if !dir.is_dir() => Some(format!("image folder {} does not exist", dir.display())),
            Source::Cifar10(_) | Source::Images(_) => None,
        }
    }
}

impl From<Source> for String {
    fn from(source: Source) -> String {
        source.to_string()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Csv(p) => write!(f, "csv:{}", p.display()),
            Source::Cifar10(p) => write!(f, "cifar10:{}", p.display()),
            Source::Images(p) => write!(f, "images:{}", p.display()),
            Source::Npy { features, targets } => write!(f, "npy:{},{}", features.display(), targets.display()),
            Source::Npz { path, arrays } if *arrays == numpy::DEFAULT_ARRAYS => write!(f, "npz:{}", path.display()),
            Source::Npz { path, arrays: [x, y] } => write!(f, "npz:{}:{x},{y}", path.display()),
        }
    }
}

/// Which CSV column holds the label or regression target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    Index(usize),
    Name(String),
}

impl FromStr for LabelColumn {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(text.parse().map(LabelColumn::Index).unwrap_or_else(|_| LabelColumn::Name(text.to_string())))
    }
}

/// What the target column means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    #[default]
    Classification,
    Regression,
}

/// How features are standardised (statistics always come from the training split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Per feature for flat samples, per channel for `[C, ...]` samples.
    #[default]
    Auto,
    PerFeature,
    PerChannel,
    None,
}

fn default_valid_fraction() -> f64 {
    0.1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_image_size() -> usize {
    32
}
fn default_true() -> bool {
    true
}

/// A complete description of a data set and how to split it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub source: Source,
    /// A separate test set in the same format; otherwise `test_fraction` of `source`.
    #[serde(default)]
    pub test: Option<Source>,
    /// CSV label column (name or 0-based index); default `label`, `target`, else column 0.
    #[serde(default)]
    pub label: Option<LabelColumn>,
    #[serde(default = "default_true")]
    pub header: bool,
    /// Reshape each sample to `[C, L]` or `[C, H, W]`.
    #[serde(default)]
    pub shape: Option<Shape>,
    #[serde(default)]
    pub task: TaskKind,
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    #[serde(default)]
    pub normalize: Normalize,
    /// Side length images are resized to.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Train and validate on this many samples of `source`, drawn with the seed; the test
    /// set stays whole. For a first look at a large data set on a small machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<usize>,
    /// Download the data set on the first run if it is missing (CIFAR-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchSetting>,
}

/// `fetch: true` downloads from where a data set's authors publish it; `fetch: {url, md5 or
/// sha256}` from a mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FetchSetting {
    Published(bool),
    Mirror(fetch::Archive),
}

/// A download `ensure` can carry out: which data set, into which directory, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    pub dataset: fetch::KnownDataset,
    pub dest: PathBuf,
    pub archive: fetch::Archive,
}

impl DataSpec {
    /// What `fetch:` asks to download, if anything; an error says why it cannot be.
    pub fn fetch_plan(&self) -> Result<Option<FetchPlan>, String> {
        let archive = match &self.fetch {
            None | Some(FetchSetting::Published(false)) => return Ok(None),
            Some(FetchSetting::Published(true)) => fetch::Archive::published(&fetch::CIFAR10),
            Some(FetchSetting::Mirror(archive)) => {
                archive.check()?;
                archive.clone()
            }
        };
        match &self.source {
            Source::Cifar10(dir) => Ok(Some(FetchPlan { dataset: fetch::CIFAR10, dest: dir.clone(), archive })),
            other => Err(format!("`fetch` downloads cifar10 sources only; {other} must already be on disk")),
        }
    }
}

impl DataSpec {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            test: None,
            label: None,
            header: true,
            shape: None,
            task: TaskKind::Classification,
            valid_fraction: default_valid_fraction(),
            test_fraction: default_test_fraction(),
            normalize: Normalize::Auto,
            image_size: default_image_size(),
            subset: None,
            fetch: None,
        }
    }
}

/// Samples in memory: `features` holds `len() * sample_len()` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub features: Vec<f32>,
    /// Class index (as f32) or regression target, one per sample.
    pub targets: Vec<f32>,
    pub shape: Shape,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.features[i * n..(i + 1) * n]
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.sample_len());
        for &i in indices {
            features.extend_from_slice(self.sample(i));
        }
        Dataset { features, targets: indices.iter().map(|&i| self.targets[i]).collect(), shape: self.shape.clone() }
    }

    /// Joins two data sets of one shape.
    pub fn concat(mut self, other: &Dataset) -> Dataset {
        self.features.extend_from_slice(&other.features);
        self.targets.extend_from_slice(&other.targets);
        self
    }
}

/// Feature and target standardisation fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// One (mean, std) per feature or per channel; `group` values share an entry in turn.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Consecutive values sharing one statistic (1 per feature, H*W per channel).
    pub group: usize,
    /// Regression targets are standardised too; predictions are mapped back.
    pub target_mean: f32,
    pub target_std: f32,
}

impl Normalization {
    /// Leaves values as they are.
    pub fn identity() -> Self {
        Self { mean: vec![0.0], std: vec![1.0], group: usize::MAX, target_mean: 0.0, target_std: 1.0 }
    }

    fn fit(train: &Dataset, mode: Normalize, task: Task) -> Self {
        let n = train.sample_len();
        let group = match mode {
            Normalize::None => return Self::identity(),
            Normalize::PerFeature => 1,
            Normalize::PerChannel => n / train.shape[0],
            Normalize::Auto if train.shape.len() == 1 => 1,
            Normalize::Auto => n / train.shape[0],
        };
        let groups = n / group;
        let mut sum = vec![0f64; groups];
        let mut sq = vec![0f64; groups];
        for row in train.features.chunks(n) {
            for (j, &v) in row.iter().enumerate() {
                sum[j / group] += v as f64;
                sq[j / group] += (v as f64) * (v as f64);
            }
        }
        let count = (train.len() * group).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, &m)| {
                let var = q / count - (m as f64) * (m as f64);
                // Constant features (e.g. always-zero pixels) are centred, not blown up.
                if var > 1e-12 { var.sqrt() as f32 } else { 1.0 }
            })
            .collect();
        let (target_mean, target_std) = match task {
            Task::Regression => mean_std(&train.targets),
            Task::Classification { .. } => (0.0, 1.0),
        };
        Self { mean, std, group, target_mean, target_std }
    }

    /// Standardises features (and regression targets) in place.
    pub fn apply(&self, data: &mut Dataset, task: Task) {
        let n = data.sample_len();
        for row in data.features.chunks_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                let g = (j / self.group).min(self.mean.len() - 1);
                *v = (*v - self.mean[g]) / self.std[g];
            }
        }
        if let Task::Regression = task {
            for t in &mut data.targets {
                *t = (*t - self.target_mean) / self.target_std;
            }
        }
    }

    /// Standardises one batch of raw samples (for prediction on new data).
    pub fn apply_features(&self, features: &mut [f32], sample_len: usize) {
        for row in features.chunks_mut(sample_len) {
            for (j, v) in row.iter_mut().enumerate() {
                let g = (j / self.group).min(self.mean.len() - 1);
                *v = (*v - self.mean[g]) / self.std[g];
            }
        }
    }

    /// Maps a standardised regression output back to target units.
    pub fn unscale_target(&self, value: f32) -> f32 {
        value * self.target_std + self.target_mean
    }
}

impl Splits {
    /// What the splits hold, in one line: the SHA-256 of every split's values and labels
    /// (and the sample shape), with the sample counts. Equal data, equally split, gives
    /// the same fingerprint on every machine.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(format!("{:?} {:?}", self.train.shape, self.task).as_bytes());
        for split in [&self.train, &self.valid, &self.test] {
            hash.update((split.len() as u64).to_le_bytes());
            for values in [&split.features, &split.targets] {
                for chunk in values.chunks(1 << 14) {
                    hash.update(chunk.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
                }
            }
        }
        let digest = hash.finalize();
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "sha256 {hex} of {} train, {} valid, {} test samples",
            self.train.len(),
            self.valid.len(),
            self.test.len()
        )
    }
}

fn mean_std(values: &[f32]) -> (f32, f32) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, if var > 1e-12 { var.sqrt() as f32 } else { 1.0 })
}

/// Train, validation and test splits, normalised with training statistics.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub valid: Dataset,
    pub test: Dataset,
    pub task: Task,
    pub normalization: Normalization,
    /// Class names in label order, where the source has them (image folders).
    pub class_names: Vec<String>,
}

/// Samples as read from a source, before splitting.
struct Loaded {
    data: Dataset,
    class_names: Vec<String>,
}

fn load_source(source: &Source, spec: &DataSpec, is_test: bool) -> Result<Loaded, DataError> {
    match source {
        Source::Csv(path) => Ok(Loaded { data: csv_source::load(path, spec)?, class_names: Vec::new() }),
        Source::Cifar10(dir) => {
            let files: Vec<String> = if is_test {
                vec!["test_batch.bin".into()]
            } else {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            };
            Ok(Loaded {
                data: cifar::load(dir, &files)?,
                class_names: cifar::CLASSES.iter().map(|s| s.to_string()).collect(),
            })
        }
        Source::Images(dir) => {
            let (data, class_names) = images::load(dir, spec.image_size)?;
            Ok(Loaded { data, class_names })
        }
        Source::Npy { features, targets } => {
            Ok(Loaded { data: numpy::load_npy(features, targets, spec)?, class_names: Vec::new() })
        }
        Source::Npz { path, arrays } => {
            Ok(Loaded { data: numpy::load_npz(path, arrays, spec)?, class_names: Vec::new() })
        }
    }
}

/// Reads every sample of `source` as it is (no split, no normalisation), with the CSV
/// and image settings of `spec`.
pub fn read(source: &Source, spec: &DataSpec) -> Result<Dataset, DataError> {
    let data = load_source(source, spec, true)?.data;
    if data.is_empty() {
        return Err(DataError::File { path: source_path(source).to_path_buf(), reason: "holds no samples".into() });
    }
    Ok(data)
}

/// Loads, splits (seeded) and normalises a data set.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Splits, DataError> {
    for (name, f) in [("valid_fraction", spec.valid_fraction), ("test_fraction", spec.test_fraction)] {
        if !(0.0..0.9).contains(&f) {
            return Err(DataError::Spec(format!("`{name}` must be in [0, 0.9), got {f}")));
        }
    }
    let source_path = source_path(&spec.source);
    let Loaded { data, class_names } = load_source(&spec.source, spec, false)?;
    if data.is_empty() {
        return Err(DataError::File { path: source_path.to_path_buf(), reason: "holds no samples".into() });
    }
    // Cifar's own test batch is the test set unless another is given.
    let test_source = spec.test.clone().or_else(|| match &spec.source {
        Source::Cifar10(dir) => Some(Source::Cifar10(dir.clone())),
        _ => None,
    });
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rng);
    let (test, rest) = match &test_source {
        Some(source) => {
            let test = load_source(source, spec, true)?.data;
            if test.sample_len() != data.sample_len() {
                return Err(DataError::Spec(format!(
                    "test set {source} has {} values per sample, the training set {} has {}",
                    test.sample_len(),
                    spec.source,
                    data.sample_len()
                )));
            }
            (Dataset { shape: data.shape.clone(), ..test }, order)
        }
        None => {
            let n_test = ((data.len() as f64) * spec.test_fraction).round() as usize;
            (data.select(&order[..n_test]), order[n_test..].to_vec())
        }
    };
    let mut rest = rest;
    match spec.subset {
        Some(0) => return Err(DataError::Spec("`subset` must be at least 1".into())),
        Some(n) => rest.truncate(n),
        None => {}
    }
    let n_valid = ((rest.len() as f64) * spec.valid_fraction).round() as usize;
    let valid = data.select(&rest[..n_valid]);
    let train = data.select(&rest[n_valid..]);
    if train.is_empty() {
        return Err(DataError::File {
            path: source_path.to_path_buf(),
            reason: format!("{} samples leave none to train on", data.len()),
        });
    }
    let task = match spec.task {
        TaskKind::Regression => Task::Regression,
        TaskKind::Classification => {
            let classes = (train.targets.iter().fold(0f32, |m, &t| m.max(t)) as usize + 1).max(class_names.len());
            for (name, split) in [("validation", &valid), ("test", &test)] {
                if let Some(bad) = split.targets.iter().find(|&&t| t as usize >= classes) {
                    return Err(DataError::Spec(format!(
                        "{name} label {bad} is out of range: the training split of {} has classes 0..{}",
                        spec.source,
                        classes - 1
                    )));
                }
            }
            Task::Classification { classes }
        }
    };
    let normalization = Normalization::fit(&train, spec.normalize, task);
    let (mut train, mut valid, mut test) = (train, valid, test);
    for split in [&mut train, &mut valid, &mut test] {
        normalization.apply(split, task);
    }
    Ok(Splits { train, valid, test, task, normalization, class_names })
}

fn source_path(source: &Source) -> &Path {
    match source {
        Source::Csv(p) | Source::Cifar10(p) | Source::Images(p) | Source::Npz { path: p, .. } => p,
        Source::Npy { features, .. } => features,
    }
}

/// Checks a reshape against the number of values per sample.
fn apply_shape(shape: &Option<Shape>, values: usize, origin: &Path) -> Result<Shape, DataError> {
    match shape {
        None => Ok(vec![values]),
        Some(s) if s.is_empty() || s.len() > 3 || s.contains(&0) => {
            Err(DataError::Spec(format!("shape {s:?} must be [C, L] or [C, H, W] with no zero axis")))
        }
        Some(s) if s.iter().product::<usize>() != values => Err(DataError::File {
            path: origin.to_path_buf(),
            reason: format!("shape {s:?} holds {} values but samples have {values}", s.iter().product::<usize>()),
        }),
        Some(s) => Ok(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_is_fitted_per_channel() {
        let data =
            Dataset { features: vec![1., 3., 10., 30., 3., 5., 50., 70.], targets: vec![0., 1.], shape: vec![2, 2] };
        let norm = Normalization::fit(&data, Normalize::Auto, Task::Classification { classes: 2 });
        assert_eq!(norm.group, 2);
        assert_eq!(norm.mean, vec![3.0, 40.0]);
        let mut copy = data.clone();
        norm.apply(&mut copy, Task::Classification { classes: 2 });
        let mean: f32 = copy.features.iter().sum::<f32>() / 8.0;
        assert!(mean.abs() < 1e-6);
    }

    #[test]
    fn sources_parse() {
        assert_eq!("csv:a/b.csv".parse::<Source>().unwrap(), Source::Csv("a/b.csv".into()));
        let err = "parquet:x".parse::<Source>().unwrap_err().to_string();
        assert!(err.contains("unknown data format `parquet`"), "{err}");
        for text in ["npy:a/x.npy,a/y.npy", "npz:d/f.npz", "npz:d/f.npz:feat,lab", "npz:C:/d/f.npz"] {
            assert_eq!(text.parse::<Source>().unwrap().to_string(), text);
        }
        assert_eq!(
            "npz:d/f.npz:feat,lab".parse::<Source>().unwrap(),
            Source::Npz { path: "d/f.npz".into(), arrays: ["feat".into(), "lab".into()] }
        );
        assert!("npy:x.npy".parse::<Source>().unwrap_err().to_string().contains("two arrays"));
    }
}
