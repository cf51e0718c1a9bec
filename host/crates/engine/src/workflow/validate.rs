//! Checks a parsed workflow against the world: data on disk, packs and their blocks,
//! the searcher plugin, hyper-parameter ranges and the stage DAG. The result is a
//! `Resolved` workflow the engine can run without further checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::dag::{DagError, topological_order};
use super::{
    Choice, HparamSpec, OPTIMIZERS, SearcherSpec, Source, StageKind, StageWork, Step, TrainerKind, Workflow,
    WorkflowError,
};
use msh_plugin::oci::{self, OciRef, PackLock};
use msh_plugin::{EMBEDDED, PackStore, Plugin, PluginHost, World};
use msh_train::data::{DataSpec, Source as DataSource};
use msh_vocab::space::{BlockInfo, HparamRange, SearchContext, SearchSpace, SpaceBlock};

/// A validated workflow with its plugins loaded and its paths made absolute-or-cwd-relative.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub data: DataSpec,
    pub packs: Vec<Plugin>,
    /// Which pack (index into `packs`) defines each allowed block.
    pub block_pack: BTreeMap<String, usize>,
    pub space: SearchSpace,
    /// The searcher of each search stage.
    pub searchers: BTreeMap<String, Plugin>,
    /// The search stage each other stage works from (the nearest among its needs).
    pub upstream: BTreeMap<String, String>,
    pub table: Option<PathBuf>,
    /// Stage names in dependency order.
    pub order: Vec<String>,
    /// The run directory `warm_start.from` names.
    pub warm_start: Option<PathBuf>,
}

/// `did you mean `x`?` for the candidate closest to `name`, when one is close.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(h) => format!("{message}; {h}"),
        None => message,
    }
}

/// Where plugins come from: the pack store, the workflow's directory, and the workflow's
/// lock file for `oci://` plugins named by tag.
struct PluginSources<'a> {
    host: &'a PluginHost,
    store: &'a PackStore,
    base: PathBuf,
    workflow: &'a Path,
    lock: Option<PackLock>,
}

/// A built-in name, a `.wasm` file (relative to the workflow), an `oci://` reference or an
/// installed pack.
fn load_plugin(sources: &PluginSources<'_>, reference: &str) -> Result<Plugin, String> {
    let PluginSources { host, store, base, .. } = sources;
    if EMBEDDED.iter().any(|(n, _)| *n == reference) {
        return host.embedded(reference).map_err(|e| e.to_string());
    }
    if reference.starts_with(oci::SCHEME) {
        let mut wanted: OciRef = reference.parse().map_err(|e: oci::OciError| e.to_string())?;
        if let Some(lock) = &sources.lock {
            wanted = lock.pin(&wanted, sources.workflow)?;
        }
        return store.fetch_oci(host, &wanted).map(|pack| pack.plugin).map_err(|e| e.to_string());
    }
    let path = base.join(reference);
    if reference.ends_with(".wasm") || path.is_file() {
        if !path.is_file() {
            return Err(format!("plugin file {} does not exist", path.display()));
        }
        return host.load_file(&path).map_err(|e| e.to_string());
    }
    store.load(host, reference).map_err(|e| {
        let known: Vec<String> = EMBEDDED
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(store.list().unwrap_or_default().into_iter().map(|p| p.name))
            .collect();
        with_hint(
            format!("unknown plugin `{reference}`: not built in, not a .wasm file, not installed ({e})"),
            did_you_mean(reference, known.iter().map(String::as_str)),
        )
    })
}

/// Validates everything `parse` could not: the result runs as is.
/// Whether `name` may name a workflow or a stage: it becomes a directory name
/// (`runs/<workflow>`, an ensemble stage's checkpoints), so letters, digits, `_` and `-`.
fn is_identifier(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Names that become paths are identifiers, and an export's `dir` stays inside the run
/// directory.
pub(super) fn check_names(source: &Source, wf: &Workflow) -> Result<(), WorkflowError> {
    use Step::Key;
    const RULE: &str = "letters, digits, `_` and `-` (at most 200, not starting with `-`)";
    if !is_identifier(&wf.name) {
        return Err(source.error_at(&[Key("name")], None, format!("workflow name {:?}: use {RULE}", wf.name)));
    }
    for (name, stage) in &wf.stages {
        if !is_identifier(name) {
            return Err(source.error_at(&[Key("stages")], Some(name), format!("stage name {name:?}: use {RULE}")));
        }
        if let super::StageWork::Export(export) = &stage.work
            && let Some(dir) = &export.dir
            && !dir.components().all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(source.error_at(
                &[Key("stages"), Key(name), Key("dir")],
                None,
                format!("`dir` {} must be a relative path inside the run directory (no `..`)", dir.display()),
            ));
        }
    }
    Ok(())
}

pub fn resolve(
    source: &Source,
    wf: &Workflow,
    host: &PluginHost,
    store: &PackStore,
) -> Result<Resolved, WorkflowError> {
    use Step::{Item, Key};
    let base = source.base_dir();
    let err = |path: &[Step<'_>], value: Option<&str>, message: String| source.error_at(path, value, message);

    if wf.inline_store_secret().is_some() {
        tracing::warn!(
            "{}: `store:` holds a password; msh leaves it out of everything it writes and shows, but the \
             workflow file holds it: prefer `store: env:MSH_STORE`",
            source.path.display()
        );
    }
    if wf.version != super::SCHEMA_VERSION {
        return Err(err(
            &[Key("version")],
            None,
            format!("schema version {} is not supported; this msh reads version 1", wf.version),
        ));
    }

    // Data.
    let mut data = wf.data.clone();
    data.source = data.source.relative_to(&base);
    data.test = data.test.as_ref().map(|t| t.relative_to(&base));
    if let Some(task) = wf.task {
        data.task = task;
    }
    // A data set that `fetch:` downloads is missing until the run starts.
    let fetched = data.fetch_plan().map_err(|message| err(&[Key("data"), Key("fetch")], None, message))?;
    if let Some(message) = data.source.missing().filter(|_| fetched.is_none()) {
        return Err(err(&[Key("data"), Key("source")], None, message));
    }
    if let Some(message) = data.test.as_ref().and_then(DataSource::missing) {
        return Err(err(&[Key("data"), Key("test")], None, message));
    }

    let warm_start = match &wf.warm_start {
        Some(warm) => {
            let dir = base.join(&warm.from);
            if !msh_store::Store::exists(&dir) {
                return Err(err(
                    &[Key("warm_start"), Key("from")],
                    None,
                    format!("{} is not a run directory (no store in it)", dir.display()),
                ));
            }
            Some(dir)
        }
        None => None,
    };

    // Trainers.
    let trainers = &wf.trainers;
    if trainers.count == 0 {
        return Err(err(&[Key("trainers"), Key("count")], None, "`count` must be at least 1".into()));
    }
    let table = match (trainers.kind, &trainers.table) {
        (TrainerKind::Table, None) => {
            return Err(err(&[Key("trainers"), Key("kind")], None, "a `table` trainer needs `table: FILE.csv`".into()));
        }
        (TrainerKind::Table, Some(path)) => {
            let path = base.join(path);
            if !path.is_file() {
                return Err(err(
                    &[Key("trainers"), Key("table")],
                    None,
                    format!("table {} does not exist", path.display()),
                ));
            }
            Some(path)
        }
        (TrainerKind::Burn, Some(_)) => {
            return Err(err(
                &[Key("trainers"), Key("table")],
                None,
                "`table` applies to `kind: table` trainers only".into(),
            ));
        }
        (TrainerKind::Burn, None) => None,
    };

    let sharing = &wf.weight_sharing;
    if sharing.mode != super::SharingMode::None {
        if trainers.kind == TrainerKind::Table {
            return Err(err(
                &[Key("weight_sharing"), Key("mode")],
                None,
                "weight sharing needs `kind: burn` trainers".into(),
            ));
        }
        if !(sharing.discount > 0.0 && sharing.discount <= 1.0) {
            return Err(err(
                &[Key("weight_sharing"), Key("discount")],
                None,
                format!("`discount` must be in (0, 1], got {}", sharing.discount),
            ));
        }
        if sharing.donors == 0 {
            return Err(err(&[Key("weight_sharing"), Key("donors")], None, "`donors` must be at least 1".into()));
        }
    }

    let distillation = &wf.distillation;
    if distillation.mode != super::DistillMode::None {
        let at = |field| [Key("distillation"), Key(field)];
        if trainers.kind == TrainerKind::Table {
            return Err(err(&at("mode"), None, "distillation needs `kind: burn` trainers".into()));
        }
        if !(distillation.lambda.is_finite() && distillation.lambda >= 0.0) {
            return Err(err(
                &at("lambda"),
                None,
                format!("`lambda` must be non-negative, got {}", distillation.lambda),
            ));
        }
        if !(distillation.temperature.is_finite() && distillation.temperature > 0.0) {
            return Err(err(
                &at("temperature"),
                None,
                format!("`temperature` must be positive, got {}", distillation.temperature),
            ));
        }
        if distillation.top_k == 0 || distillation.ramp_trials == 0 {
            let field = if distillation.top_k == 0 { "top_k" } else { "ramp_trials" };
            return Err(err(&at(field), None, format!("`{field}` must be at least 1")));
        }
    }

    if wf.ensembling.strategy != super::EnsembleStrategy::None {
        let at = |field| [Key("ensembling"), Key(field)];
        if trainers.kind == TrainerKind::Table {
            return Err(err(&at("strategy"), None, "ensembles during the search need `kind: burn` trainers".into()));
        }
        if wf.ensembling.every < 2 || wf.ensembling.top_k == 0 {
            let (field, least) = if wf.ensembling.every < 2 { ("every", 2) } else { ("top_k", 1) };
            return Err(err(&at(field), None, format!("`{field}` must be at least {least}")));
        }
    }
    if let Some(store) = &wf.store {
        let url = store.strip_prefix("env:").map_or(Some(store.as_str()), |_| None);
        if url.is_some_and(|u| !u.starts_with("postgres://") && !u.starts_with("postgresql://")) {
            let reason = "`store` is a `postgres://USER@HOST/DB` URL, or `env:NAME` for one in a variable".into();
            return Err(err(&[Key("store")], None, reason));
        }
    }
    // A table trainer has no epochs: early stopping is ignored there.
    if let Some(stopping) = &wf.early_stopping {
        let at = |field| [Key("early_stopping"), Key(field)];
        if stopping.grace_epochs == 0 {
            return Err(err(&at("grace_epochs"), None, "`grace_epochs` must be at least 1".into()));
        }
        if stopping.min_trials == 0 {
            return Err(err(&at("min_trials"), None, "`min_trials` must be at least 1".into()));
        }
        match (stopping.mode, stopping.reduction_factor) {
            (super::StopMode::Asha | super::StopMode::Hyperband, Some(eta)) if eta < 2 => {
                return Err(err(
                    &at("reduction_factor"),
                    None,
                    format!("`reduction_factor` must be at least 2, got {eta}"),
                ));
            }
            (super::StopMode::Median, Some(_)) => {
                return Err(err(
                    &at("reduction_factor"),
                    None,
                    "`reduction_factor` applies to `mode: asha` only".into(),
                ));
            }
            _ => {}
        }
    }
    if let Err(e) = wf.training.check() {
        return Err(err(&[Key("training")], None, e.to_string()));
    }
    if wf.trainers.threads == Some(0) {
        return Err(err(&[Key("trainers"), Key("threads")], None, "`threads` must be at least 1".into()));
    }
    if wf.objectives.max_parameters == Some(0) {
        return Err(err(
            &[Key("objectives"), Key("max_parameters")],
            None,
            "`max_parameters` must be at least 1".into(),
        ));
    }

    // Packs and blocks.
    let lock = PackLock::read(&source.path).map_err(|m| err(&[Key("space"), Key("packs")], None, m))?;
    let sources = PluginSources { host, store, base: base.clone(), workflow: &source.path, lock };
    let mut packs = Vec::new();
    let mut offered: BTreeMap<String, usize> = BTreeMap::new();
    let mut infos_by_name: BTreeMap<String, BlockInfo> = BTreeMap::new();
    for (i, reference) in wf.space.packs.iter().enumerate() {
        let pack =
            load_plugin(&sources, reference).map_err(|m| err(&[Key("space"), Key("packs"), Item(i)], None, m))?;
        if pack.world != World::BlockPack {
            return Err(err(
                &[Key("space"), Key("packs"), Item(i)],
                None,
                format!("`{reference}` is a {}, not a block pack", pack.world),
            ));
        }
        let infos = pack.blocks().map_err(|e| err(&[Key("space"), Key("packs"), Item(i)], None, e.to_string()))?;
        for info in infos {
            if !offered.contains_key(&info.name) {
                offered.insert(info.name.clone(), packs.len());
                infos_by_name.insert(info.name.clone(), info);
            }
        }
        packs.push(pack);
    }
    let allowed: Vec<String> =
        if wf.space.blocks.is_empty() { offered.keys().cloned().collect() } else { wf.space.blocks.clone() };
    if allowed.is_empty() {
        return Err(err(
            &[Key("space")],
            None,
            "the search space has no blocks: list `blocks` or `packs` that offer some".into(),
        ));
    }
    let mut block_pack = BTreeMap::new();
    for (i, block) in wf.space.blocks.iter().enumerate() {
        match offered.get(block) {
            Some(&pack) => {
                block_pack.insert(block.clone(), pack);
            }
            // A table trainer never builds blocks: names only need to match the table.
            None if trainers.kind == TrainerKind::Table => {}
            None => {
                let message = format!(
                    "unknown block `{block}`: no pack of `space.packs` ({}) offers it",
                    wf.space.packs.join(", ")
                );
                return Err(err(
                    &[Key("space"), Key("blocks"), Item(i)],
                    None,
                    with_hint(message, did_you_mean(block, offered.keys().map(String::as_str))),
                ));
            }
        }
    }
    if wf.space.blocks.is_empty() {
        block_pack = offered.clone();
    }
    if wf.space.min_depth == 0 || wf.space.min_depth > wf.space.max_depth {
        return Err(err(
            &[Key("space"), Key("min_depth")],
            None,
            format!(
                "depth bounds must satisfy 1 <= min_depth <= max_depth, got {}..{}",
                wf.space.min_depth, wf.space.max_depth
            ),
        ));
    }
    let mut hparams = Vec::new();
    for (name, spec) in &wf.space.hparams {
        let at = [Key("space"), Key("hparams"), Key(name.as_str())];
        if super::hparam(name).is_none() {
            let known: Vec<&str> = super::hparam_names().collect();
            let message = format!("unknown hyper-parameter `{name}` (known: {})", known.join(", "));
            return Err(err(&at, None, with_hint(message, did_you_mean(name, known))));
        }
        hparams.push(hparam_range(name, spec).map_err(|m| err(&at, None, m))?);
    }
    let blocks = allowed
        .iter()
        .map(|name| match (infos_by_name.get(name), block_pack.get(name)) {
            (Some(info), Some(&pack)) => space_block(&packs[pack], info),
            // A table trainer's block: a name only.
            _ => SpaceBlock { name: name.clone(), description: String::new(), params: vec![], ranks: vec![] },
        })
        .collect();
    // The input rank is known once the data is read (the engine sets it).
    let space =
        SearchSpace { blocks, input_rank: 0, min_depth: wf.space.min_depth, max_depth: wf.space.max_depth, hparams };

    // Budget.
    let check_budget = |budget: &super::Budget, at: &[Step<'_>]| -> Result<(), WorkflowError> {
        match (budget.trials, budget.wall_time, budget.epochs) {
            (None, None, None) => {
                Err(err(at, None, "a budget needs `trials`, `wall_time`, `epochs` or some of them".into()))
            }
            (Some(0), _, _) => Err(err(at, None, "`trials` must be at least 1".into())),
            (_, _, Some(0)) => Err(err(at, None, "`epochs` must be at least 1".into())),
            _ => Ok(()),
        }
    };
    check_budget(&wf.budget, &[Key("budget")])?;

    // Stages.
    if wf.stages.is_empty() {
        return Err(err(
            &[Key("stages")],
            None,
            "a workflow needs at least one stage (e.g. `search: {kind: search}`)".into(),
        ));
    }
    let order = topological_order(&wf.stages).map_err(|e| match e {
        DagError::Missing { stage, index, need } => {
            let message = format!("stage `{stage}` needs `{need}`, which is not a stage");
            err(
                &[Key("stages"), Key(&stage), Key("needs"), Item(index)],
                None,
                with_hint(message, did_you_mean(&need, wf.stages.keys().map(String::as_str))),
            )
        }
        DagError::Cycle(cycle) => err(
            &[Key("stages"), Key(&cycle[0]), Key("needs")],
            None,
            format!("stages depend on each other in a cycle: {}", cycle.join(" -> ")),
        ),
    })?;
    let mut searchers = BTreeMap::new();
    let mut loaded: BTreeMap<String, Plugin> = BTreeMap::new();
    let mut upstream = BTreeMap::new();
    for (name, stage) in &wf.stages {
        let at = |field: &'static str| [Key("stages"), Key(name.as_str()), Key(field)];
        match &stage.work {
            StageWork::Search(search) => {
                let spec = wf.searcher_of(stage);
                let path: Vec<Step<'_>> = if search.searcher.is_some() {
                    vec![Key("stages"), Key(name.as_str()), Key("searcher"), Key("plugin")]
                } else {
                    vec![Key("searcher"), Key("plugin")]
                };
                let plugin = match loaded.get(&spec.plugin) {
                    Some(p) => p.clone(),
                    None => {
                        let p = load_plugin(&sources, &spec.plugin).map_err(|m| err(&path, None, m))?;
                        if p.world != World::Searcher {
                            return Err(err(
                                &path,
                                None,
                                format!("`{}` is a {}, not a searcher", spec.plugin, p.world),
                            ));
                        }
                        loaded.insert(spec.plugin.clone(), p.clone());
                        p
                    }
                };
                let config = config_pairs(spec).map_err(|m| err(&path[..path.len() - 1], None, m))?;
                let settings = plugin.settings().map_err(|e| err(&path, None, e.to_string()))?;
                if !settings.is_empty() {
                    let known: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
                    if let Some(key) = spec.config.keys().find(|k| !known.contains(&k.as_str())) {
                        let mut at = path[..path.len() - 1].to_vec();
                        at.extend([Key("config"), Key(key.as_str())]);
                        let message = format!(
                            "`{key}` is not a setting of searcher `{}` (its settings: {})",
                            spec.plugin,
                            known.join(", ")
                        );
                        return Err(err(&at, None, with_hint(message, did_you_mean(key, known.iter().copied()))));
                    }
                }
                // The searcher parses its settings' values when it first proposes: ask it once,
                // so that a value it refuses is an error here rather than at the run's first trial.
                // Only what it says of a setting counts: the rest waits for the run's data.
                if !spec.config.is_empty() {
                    let context = SearchContext { seed: wf.seed, budget: 0, config };
                    let refused = match plugin.propose_once(&context, &space, &[], 1) {
                        Err(e) => e.to_string(),
                        Ok(_) => String::new(),
                    };
                    if let Some(key) = spec.config.keys().find(|k| refused.contains(&format!("setting `{k}`"))) {
                        let mut at = path[..path.len() - 1].to_vec();
                        at.extend([Key("config"), Key(key.as_str())]);
                        let reason = refused.rsplit(": ").next().unwrap_or(&refused);
                        return Err(err(&at, None, format!("searcher `{}` refuses it: {reason}", spec.plugin)));
                    }
                }
                if let Some(budget) = &search.budget {
                    check_budget(budget, &at("budget"))?;
                }
                searchers.insert(name.clone(), plugin);
            }
            work => {
                let kind = stage.kind();
                let Some(search) = upstream_search(wf, name) else {
                    return Err(err(
                        &at("kind"),
                        None,
                        format!("a {kind} stage needs a search stage before it in `needs`"),
                    ));
                };
                upstream.insert(name.clone(), search);
                let counts = match work {
                    StageWork::Ensemble(e) => {
                        vec![("top_k", e.top_k), ("width", e.width), ("pool", e.pool), ("every", e.every)]
                    }
                    StageWork::Retrain(r) => vec![("epochs", r.epochs)],
                    StageWork::Distill(d) => vec![("epochs", d.epochs)],
                    StageWork::Export(_) | StageWork::Search(_) => vec![],
                };
                if let Some((field, _)) = counts.into_iter().find(|(_, v)| *v == Some(0)) {
                    return Err(err(&at(field), None, format!("`{field}` must be at least 1")));
                }
                if matches!(kind, StageKind::Retrain | StageKind::Distill) && trainers.kind == TrainerKind::Table {
                    return Err(err(&at("kind"), None, format!("a {kind} stage needs `kind: burn` trainers")));
                }
            }
        }
    }
    Ok(Resolved { data, packs, block_pack, space, searchers, upstream, table, order, warm_start })
}

/// The nearest search stage among `stage`'s needs (breadth first).
pub fn upstream_search(wf: &Workflow, stage: &str) -> Option<String> {
    let mut queue: Vec<&str> = wf.stages.get(stage)?.needs.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    while !queue.is_empty() {
        let mut next = Vec::new();
        for name in queue {
            if !seen.insert(name) {
                continue;
            }
            let s = wf.stages.get(name)?;
            if s.kind() == StageKind::Search {
                return Some(name.to_string());
            }
            next.extend(s.needs.iter().map(String::as_str));
        }
        queue = next;
    }
    None
}

/// A searcher's config as the text key/values plugins receive; scalars only.
/// A block as searchers see it: its parameters, and the rank it yields on each input rank
/// it accepts (found by building it on a small input of that rank).
fn space_block(pack: &Plugin, info: &BlockInfo) -> SpaceBlock {
    let ranks = info
        .input_ranks
        .iter()
        .filter_map(|&rank| {
            let shape: &[usize] = match rank {
                1 => &[64],
                2 => &[16, 32],
                _ => &[8, 16, 16],
            };
            let graph = pack.build(&info.name, shape, &[]).ok()?;
            let output = msh_graph::infer_block(&graph, 0, shape).ok()?.pop()?;
            Some((rank, output.len() as u8))
        })
        .collect();
    SpaceBlock { name: info.name.clone(), description: info.description.clone(), params: info.params.clone(), ranks }
}

pub fn config_pairs(spec: &SearcherSpec) -> Result<Vec<(String, String)>, String> {
    use serde_yaml_ng::Value;
    spec.config
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(format!("searcher setting `{k}` must be a number, a word or true/false")),
            };
            Ok((k.clone(), text))
        })
        .collect()
}

fn hparam_range(name: &str, spec: &HparamSpec) -> Result<HparamRange, String> {
    let mut range = HparamRange { name: name.into(), low: 0.0, high: 0.0, log: spec.log, choices: Vec::new() };
    if !spec.choices.is_empty() {
        if spec.low.is_some() || spec.high.is_some() {
            return Err(format!("`{name}` has both `choices` and a range; give one"));
        }
        for choice in &spec.choices {
            range.choices.push(match (choice, name) {
                (Choice::Number(n), _) => *n,
                (Choice::Word(w), "optimizer") => {
                    let names: Vec<String> = OPTIMIZERS
                        .iter()
                        .map(|o| {
                            serde_json::to_value(o)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        })
                        .collect();
                    names.iter().position(|n| n == w).ok_or_else(|| {
                        with_hint(
                            format!("unknown optimizer `{w}` (known: {})", names.join(", ")),
                            did_you_mean(w, names.iter().map(String::as_str)),
                        )
                    })? as f64
                }
                (Choice::Word(w), _) => return Err(format!("choice `{w}` of `{name}` is not a number")),
            });
        }
        range.low = range.choices.iter().copied().fold(f64::INFINITY, f64::min);
        range.high = range.choices.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if let Some(c) = range.choices.iter().find(|c| name == "optimizer" && c.fract() != 0.0) {
            return Err(format!("`optimizer` choices are names or indices, got {c}"));
        }
        in_domain(name, &range)?;
        return Ok(range);
    }
    let (Some(low), Some(high)) = (spec.low, spec.high) else {
        return Err(format!("`{name}` needs `low` and `high`, or `choices`"));
    };
    if !(low.is_finite() && high.is_finite() && low <= high) {
        return Err(format!("`{name}` needs low <= high, got {low}..{high}"));
    }
    if spec.log && low <= 0.0 {
        return Err(format!("`{name}` is searched on a log scale, so `low` must be positive, got {low}"));
    }
    range.low = low;
    range.high = high;
    in_domain(name, &range)?;
    Ok(range)
}

/// A range (or its choices) must lie inside the hyper-parameter's domain: a negative batch
/// size or a billion epochs is an error here, not a crash in the trainer.
fn in_domain(name: &str, range: &HparamRange) -> Result<(), String> {
    let values = if range.choices.is_empty() { vec![range.low, range.high] } else { range.choices.clone() };
    for value in values {
        if let Some(reason) = super::hparam_outside_domain(name, value) {
            return Err(reason);
        }
    }
    Ok(())
}
