//! Workflow files (schema v1): the data, the search space, the searcher, training
//! defaults, trainers, budget, plugin limits and the DAG of stages. `load` parses and
//! validates; every error carries `FILE:LINE:COLUMN`.

mod dag;
mod hparams;
mod locate;
mod stage;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use msh_plugin::Limits;
use msh_train::data::{DataSpec, TaskKind};
use msh_train::{Backend, DistillLoss, TrainConfig};

pub use dag::topological_order;
pub use hparams::{HPARAMS, Hparam, HparamDomain, OPTIMIZERS, hparam, hparam_names, hparam_outside_domain};
pub use locate::{Step, locate};
pub use stage::{DistillStage, EnsembleStage, ExportStage, RetrainStage, SearchStage, Stage, StageKind, StageWork};
pub use validate::{Resolved, config_pairs as validate_config, resolve, upstream_search};

/// The schema version this msh reads.
pub const SCHEMA_VERSION: u32 = 1;

/// A parsed workflow file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    #[serde(default = "schema_version")]
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Paths inside are relative to the workflow file.
    pub data: DataSpec,
    /// Overrides `data.task`.
    #[serde(default)]
    pub task: Option<TaskKind>,
    /// Seeds the data split, the searcher and every trial's initialisation.
    #[serde(default)]
    pub seed: u64,
    pub space: SpaceSpec,
    /// `local-search` when absent.
    #[serde(default)]
    pub searcher: SearcherSpec,
    /// Defaults for every trial; searched hyper-parameters override them.
    #[serde(default)]
    pub training: TrainConfig,
    #[serde(default)]
    pub trainers: TrainersSpec,
    pub budget: Budget,
    #[serde(default)]
    pub limits: Limits,
    /// How trials start from earlier trials' weights.
    #[serde(default)]
    pub weight_sharing: WeightSharing,
    /// How trials learn from the best models so far.
    #[serde(default)]
    pub distillation: Distillation,
    /// Ensembles built during the search, as trials.
    #[serde(default)]
    pub ensembling: Ensembling,
    /// Besides validation loss: a parameter budget, and whether to keep the Pareto front.
    #[serde(default)]
    pub objectives: Objectives,
    /// Ends unpromising search trials after some epochs; off when absent.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// An earlier run whose trials the searchers start from.
    #[serde(default)]
    pub warm_start: Option<WarmStart>,
    /// Where the run keeps its trials: a `postgres://` URL, or `env:NAME` for a URL in
    /// that environment variable (credentials stay out of the file); LMDB in the run
    /// directory when absent. `--store` overrides it.
    #[serde(default)]
    pub store: Option<String>,
    pub stages: BTreeMap<String, Stage>,
}

/// Ensembles made while searching (ensemble stages make them afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleStrategy {
    #[default]
    None,
    /// Every `every`-th trial is an ensemble of the best trials so far.
    Intermixed,
    /// Trials train on the loss of the best ensemble so far plus themselves (outputs
    /// summed); the ensemble can grow by one member every `every` trials.
    Residual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ensembling {
    #[serde(default)]
    pub strategy: EnsembleStrategy,
    #[serde(default = "default_every")]
    pub every: usize,
    #[serde(default = "default_ensembling_method")]
    pub method: EnsembleMethod,
    #[serde(default = "default_ensembling_k")]
    pub top_k: usize,
}

fn default_every() -> usize {
    5
}
fn default_ensembling_method() -> EnsembleMethod {
    EnsembleMethod::Greedy
}
fn default_ensembling_k() -> usize {
    5
}

impl Default for Ensembling {
    fn default() -> Self {
        Self {
            strategy: EnsembleStrategy::None,
            every: default_every(),
            method: default_ensembling_method(),
            top_k: default_ensembling_k(),
        }
    }
}

/// Start from an earlier run: its finished trials over blocks of this space are told to
/// each search stage's searcher before any of this run's (as observations, not counted in
/// the budget), and its checkpoints are weight sharing's donors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStart {
    /// The earlier run's directory (relative to the workflow file), LMDB or PostgreSQL.
    pub from: PathBuf,
    /// Its search stage to read; by default the one named like the stage started, else
    /// all of its search stages.
    #[serde(default)]
    pub stage: Option<String>,
}

/// The rule that ends search trials early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Asynchronous successive halving: at rungs (epochs `grace_epochs · η^k`) only the
    /// best 1/η of the trials that reached the rung go on.
    Asha,
    /// From `grace_epochs` on, a trial worse than the median of the others at the same
    /// epoch stops.
    Median,
    /// Asynchronous Hyperband: trials take brackets in turn, bracket `b` running ASHA
    /// from `grace_epochs · η^b` with rungs of its own, so that a grace period too short
    /// for the data cannot stop every slow starter.
    Hyperband,
}

impl StopMode {
    /// The name a workflow gives it.
    pub fn name(self) -> &'static str {
        match self {
            StopMode::Asha => "asha",
            StopMode::Median => "median",
            StopMode::Hyperband => "hyperband",
        }
    }
}

/// Early stopping (multi-fidelity) of search trials, judged on validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub mode: StopMode,
    /// No trial stops before this many epochs.
    #[serde(default = "one_usize")]
    pub grace_epochs: usize,
    /// asha and hyperband: η, the rungs' spacing and the fraction kept (default 3).
    #[serde(default)]
    pub reduction_factor: Option<usize>,
    /// No decision at an epoch until this many trials have reported there.
    #[serde(default = "default_min_trials")]
    pub min_trials: usize,
}

fn default_min_trials() -> usize {
    5
}

impl EarlyStopping {
    /// η of `asha` (3 unless set).
    pub fn reduction_factor(&self) -> usize {
        self.reduction_factor.unwrap_or(3)
    }
}

/// Objectives beyond validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Architectures with more trainable parameters fail before training.
    #[serde(default)]
    pub max_parameters: Option<u64>,
    /// Export stages write every model of the front of validation loss, parameters and
    /// inference latency, not only the best.
    #[serde(default)]
    pub pareto: bool,
}

/// The distillation term trials are trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillMode {
    /// Labels only.
    #[default]
    None,
    MseLogits,
    MseSoftmax,
    /// Cross-entropy with the teacher's outputs softened at `temperature`.
    CrossEntropy,
    /// `cross_entropy` with lambda ramped from 0 over the first `ramp_trials` trials.
    Adaptive,
}

impl DistillMode {
    pub fn loss(self) -> Option<DistillLoss> {
        match self {
            DistillMode::None => None,
            DistillMode::MseLogits => Some(DistillLoss::MseLogits),
            DistillMode::MseSoftmax => Some(DistillLoss::MseSoftmax),
            DistillMode::CrossEntropy | DistillMode::Adaptive => Some(DistillLoss::CrossEntropy),
        }
    }
}

/// Which model teaches a trial (unless its searcher names a teacher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherKind {
    /// The best completed trial so far.
    #[default]
    Best,
    /// The average of the `top_k` best completed trials so far.
    Ensemble,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distillation {
    #[serde(default)]
    pub mode: DistillMode,
    #[serde(default)]
    pub teacher: TeacherKind,
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_ramp")]
    pub ramp_trials: usize,
    #[serde(default = "default_teacher_k")]
    pub top_k: usize,
}

fn default_lambda() -> f64 {
    0.5
}
fn default_temperature() -> f64 {
    2.0
}
fn default_ramp() -> usize {
    10
}
fn default_teacher_k() -> usize {
    3
}

impl Default for Distillation {
    fn default() -> Self {
        Self {
            mode: DistillMode::None,
            teacher: TeacherKind::Best,
            lambda: default_lambda(),
            temperature: default_temperature(),
            ramp_trials: default_ramp(),
            top_k: default_teacher_k(),
        }
    }
}

/// Where a new trial's initial weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingMode {
    /// Fresh initialisation.
    #[default]
    None,
    /// Copy from the parent every parameter whose path and shape match.
    Snapshot,
    /// Average over recent completed trials that have the parameter.
    Average,
    /// Like `average`, each donor weighted by 1 / its validation loss.
    LossWeighted,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightSharing {
    #[serde(default)]
    pub mode: SharingMode,
    /// Averages: the k-th most recent donor counts `discount^k`.
    #[serde(default = "default_discount")]
    pub discount: f64,
    /// Averages: at most this many donors, the most recent.
    #[serde(default = "default_donors")]
    pub donors: usize,
}

fn default_discount() -> f64 {
    0.9
}
fn default_donors() -> usize {
    5
}

impl Default for WeightSharing {
    fn default() -> Self {
        Self { mode: SharingMode::None, discount: default_discount(), donors: default_donors() }
    }
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// What the search may build.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceSpec {
    /// Block packs: a built-in name, a `.wasm` path, or an installed `NAME[@sha256:PREFIX]`.
    #[serde(default = "default_packs")]
    pub packs: Vec<String>,
    /// Allowed blocks; empty means every block of the packs.
    #[serde(default)]
    pub blocks: Vec<String>,
    #[serde(default = "one")]
    pub min_depth: u32,
    #[serde(default = "five")]
    pub max_depth: u32,
    #[serde(default)]
    pub hparams: BTreeMap<String, HparamSpec>,
}

fn default_packs() -> Vec<String> {
    vec!["core-blocks".into()]
}
fn one() -> u32 {
    1
}
fn five() -> u32 {
    5
}

/// A searched hyper-parameter: a range, or a list of choices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HparamSpec {
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub log: bool,
    /// Numbers, or optimizer names for `optimizer`.
    #[serde(default)]
    pub choices: Vec<Choice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Choice {
    Number(f64),
    Word(String),
}

/// The search algorithm and its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearcherSpec {
    /// A built-in searcher, a `.wasm` path, or an installed `NAME[@sha256:PREFIX]`.
    #[serde(default = "default_searcher")]
    pub plugin: String,
    /// Passed to the plugin as text key/values.
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml_ng::Value>,
    /// Hand a 0.1.0 searcher at most this many past trials (the best half and the most
    /// recent half); unbounded by default. 0.2.0 and later searchers are told each trial once.
    #[serde(default)]
    pub history: Option<usize>,
    /// Keep a snapshot of a 0.3.0 searcher's state every this many trials of the stage
    /// (and when the run stops), so that a resume restores it and tells the searcher only
    /// the trials that finished after it; 0 never keeps one (a resume replays every trial).
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
}

fn default_snapshot_every() -> u64 {
    1000
}

/// The searcher of workflows that name none.
pub const DEFAULT_SEARCHER: &str = "local-search";

fn default_searcher() -> String {
    DEFAULT_SEARCHER.into()
}

impl Default for SearcherSpec {
    fn default() -> Self {
        Self {
            plugin: default_searcher(),
            config: BTreeMap::new(),
            history: None,
            snapshot_every: default_snapshot_every(),
        }
    }
}

/// Who evaluates trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainerKind {
    /// Build and train each model with burn.
    #[default]
    Burn,
    /// Look metrics up in a CSV keyed by architecture (NAS-Bench style).
    Table,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainersSpec {
    /// Trainers working at once.
    #[serde(default = "one_usize")]
    pub count: usize,
    #[serde(default)]
    pub kind: TrainerKind,
    /// The metrics table of a `table` trainer.
    #[serde(default)]
    pub table: Option<PathBuf>,
    #[serde(default)]
    pub backend: Backend,
    /// CPU threads of each burn trainer [default: the cores divided among the trainers].
    #[serde(default)]
    pub threads: Option<usize>,
}

fn one_usize() -> usize {
    1
}

impl Default for TrainersSpec {
    fn default() -> Self {
        Self { count: 1, kind: TrainerKind::Burn, table: None, backend: Backend::Auto, threads: None }
    }
}

/// When a search stops: after `trials` finished trials, `wall_time`, or once its finished
/// trials have trained `epochs` epochs in all (early-stopped trials count the epochs they
/// reached), whichever first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub trials: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    #[serde(default, deserialize_with = "duration", serialize_with = "duration_text")]
    pub wall_time: Option<Duration>,
}

/// Reads `90`, `90s`, `15m` or `2h`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(u64),
        Words(String),
    }
    let parsed = match Option::<Text>::deserialize(d)? {
        None => return Ok(None),
        Some(Text::Seconds(s)) => Some(s),
        Some(Text::Words(w)) => parse_duration(&w),
    };
    parsed
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| serde::de::Error::custom("a wall time is a number of seconds or like `90s`, `15m`, `2h`"))
}

fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().ok()?;
    Some(
        n * match unit.trim() {
            "" | "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            _ => return None,
        },
    )
}

fn duration_text<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
        None => s.serialize_none(),
    }
}

/// How an ensemble stage picks and weights its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleMethod {
    /// The `top_k` best trials, equal weights.
    #[default]
    Average,
    /// The `top_k` best trials, weights learned on the validation split.
    Weighted,
    /// Greedy selection with replacement from the `top_k` best (Caruana et al. 2004).
    Greedy,
    /// The best of random groups of `width` from the `top_k` best of the first `pool` trials.
    NonAdaptive,
    /// In trial order, the best trial of every `every` joins when it helps.
    Adaptive,
    /// The `top_k` best trials under a dense layer over their log-probabilities (values),
    /// trained on the training split (Model Search's WEIGHTED combiner).
    Learned,
}

/// What an export writes: msh's checkpoint files, an ONNX file, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// `model.json` and `weights.bpk` (or `ensemble.json` and `members/`), for `msh predict`.
    Msh,
    /// `model.onnx`, for ONNX Runtime and every other ONNX reader.
    Onnx,
    #[default]
    All,
}

impl ExportFormat {
    pub fn msh(self) -> bool {
        matches!(self, ExportFormat::Msh | ExportFormat::All)
    }

    pub fn onnx(self) -> bool {
        matches!(self, ExportFormat::Onnx | ExportFormat::All)
    }
}

/// A workflow that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("cannot read workflow {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{}: {message}", path.display(), match location {
        Some((line, column)) => format!("{line}:{column}"),
        None => "1:1".to_string(),
    })]
    Invalid { path: PathBuf, location: Option<(usize, usize)>, message: String },
}

/// A workflow file's text and where it came from, for locating errors.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// The largest workflow file msh reads: the YAML parser's time grows faster than the text.
pub const MAX_WORKFLOW_BYTES: u64 = 1 << 20;
/// The deepest nesting of `[` and `{` a workflow may hold (real ones use 3 or 4).
pub const MAX_NESTING: usize = 64;

impl Source {
    pub fn read(path: &Path) -> Result<Self, WorkflowError> {
        let io = |source| WorkflowError::Io { path: path.to_path_buf(), source };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_WORKFLOW_BYTES {
            return Err(WorkflowError::Invalid {
                path: path.to_path_buf(),
                location: None,
                message: format!("the file is {size} bytes; a workflow is at most {MAX_WORKFLOW_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    /// An error at `path` in the file (refined to the word `value` when given).
    pub fn error_at(&self, path: &[Step<'_>], value: Option<&str>, message: impl Into<String>) -> WorkflowError {
        WorkflowError::Invalid {
            path: self.path.clone(),
            location: locate(&self.text, path, value),
            message: message.into(),
        }
    }

    /// The text with the secrets of an inline `store:` URL left out: what msh copies into
    /// a run (`RUN/workflow.yaml`, the run record, the report and the dashboard).
    pub fn redacted_text(&self, wf: &Workflow) -> String {
        match wf.inline_store_secret() {
            Some((url, redacted)) => self.text.replace(url, &redacted),
            None => self.text.clone(),
        }
    }

    /// The directory relative paths in the workflow are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// Parses the YAML; type errors and unknown keys come with a location and a hint, and
    /// names that become paths are checked.
    pub fn parse(&self) -> Result<Workflow, WorkflowError> {
        if let Some(location) = too_deep(&self.text) {
            return Err(WorkflowError::Invalid {
                path: self.path.clone(),
                location: Some(location),
                message: format!("flow collections nest deeper than {MAX_NESTING} levels"),
            });
        }
        let workflow = self.parse_yaml()?;
        validate::check_names(self, &workflow)?;
        Ok(workflow)
    }

    fn parse_yaml(&self) -> Result<Workflow, WorkflowError> {
        serde_yaml_ng::from_str::<Workflow>(&self.text).map_err(|e| {
            let mut location = e.location().map(|l| (l.line(), l.column()));
            let mut message = e.to_string();
            if let (Some(_), Some(i)) = (location, message.rfind(" at line ")) {
                message.truncate(i);
            }
            // A misplaced stage setting reads like the errors `resolve` finds: without
            // serde's key path in front.
            if let Some(at) = message.find(stage::MISPLACED).and_then(|i| message[..i].rfind(": `")) {
                message.drain(..at + 2);
            }
            if let Some((unknown, expected)) = unknown_name(&message) {
                if let Some(hint) = validate::did_you_mean(&unknown, expected.iter().map(String::as_str)) {
                    message.push_str(&format!("; {hint}"));
                }
                // Flattened or buffered maps report the end of the map; point at the key.
                if let Some((line, _)) = location {
                    let lines: Vec<&str> = self.text.lines().take(line).collect();
                    location = lines
                        .iter()
                        .enumerate()
                        .rev()
                        .find_map(|(i, l)| l.find(&format!("{unknown}:")).map(|c| (i + 1, c + 1)))
                        .or(location);
                }
            }
            WorkflowError::Invalid { path: self.path.clone(), location, message }
        })
    }
}

/// Where `[`/`{` first nest deeper than `MAX_NESTING` (outside quotes and comments), if
/// they do: checked before parsing, whose time grows faster than the depth.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut quote = None;
        for (j, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((i + 1, j + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// The name and the expected names of serde's "unknown field/variant" messages.
fn unknown_name(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split_once("unknown field `").or_else(|| message.split_once("unknown variant `"))?.1;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((name.to_string(), expected))
}

/// Reads, parses and validates a workflow file.
pub fn load(path: &Path) -> Result<(Source, Workflow), WorkflowError> {
    let source = Source::read(path)?;
    let workflow = source.parse()?;
    Ok((source, workflow))
}

impl Workflow {
    /// The store URL of `store:`, with `env:NAME` read from the environment.
    pub fn store_url(&self) -> Result<Option<String>, String> {
        match self.store.as_deref().map(|s| (s, s.strip_prefix("env:"))) {
            None => Ok(None),
            Some((_, Some(var))) => std::env::var(var)
                .map(Some)
                .map_err(|_| format!("workflow `{}`: `store: env:{var}` but {var} is not set", self.name)),
            Some((url, None)) => Ok(Some(url.to_string())),
        }
    }

    /// An inline `store:` URL that holds a secret, and the URL without it.
    pub fn inline_store_secret(&self) -> Option<(&str, String)> {
        let url = self.store.as_deref().filter(|s| !s.starts_with("env:"))?;
        let redacted = msh_store::redact_url(url);
        (redacted != url).then_some((url, redacted))
    }

    /// The stage's searcher: its own, else the workflow's.
    pub fn searcher_of<'a>(&'a self, stage: &'a Stage) -> &'a SearcherSpec {
        stage.search().and_then(|s| s.searcher.as_ref()).unwrap_or(&self.searcher)
    }

    pub fn budget_of(&self, stage: &Stage) -> Budget {
        stage.search().and_then(|s| s.budget).unwrap_or(self.budget)
    }

    /// Training settings for one trial: the defaults, then the searched values.
    pub fn trial_config(&self, hparams: &[(String, f64)], seed: u64) -> TrainConfig {
        let mut config = self.training.clone();
        config.seed = seed;
        for (name, value) in hparams {
            if let Some(hparam) = hparam(name) {
                (hparam.apply)(&mut config, *value);
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("2 weeks"), None);
    }

    #[test]
    fn unknown_names_are_split() {
        let (name, expected) = unknown_name("stages.a: unknown field `neds`, expected one of `kind`, `needs`").unwrap();
        assert_eq!(name, "neds");
        assert_eq!(expected, ["kind", "needs"]);
    }
}
