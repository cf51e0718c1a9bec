//! Local search, msh's default searcher: propose unseen one-move neighbours (a block
//! replaced, inserted or removed, a block parameter stepped, a hyper-parameter moved) of
//! the best trial so far, after random shallow starts that begin with each block in turn.
//! Neighbours that change the architecture are tried best-predicted first (with
//! probability `explore`, a random one instead): running means of the objective per block
//! at each position, per block, per block parameter value and per depth predict them, for
//! as long as the model ranks the recent trials better than chance by a margin; otherwise
//! in random order. Steps of a hyper-parameter are drawn at random in their share. When
//! every neighbour of the best has been tried, go on with the next best of a beam of
//! `beam_size`; when the whole beam is spent, restart from a random architecture. Each
//! trial costs the same whatever the history's length: trials are observed once,
//! neighbourhoods are listed once per beam member.

use std::collections::HashMap;

/// Running means of the objective by feature of an architecture: a block at a position
/// counted from the input, at one counted from the output, anywhere, and the depth.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct Model {
    /// Feature -> (sum of objectives, count).
    means: HashMap<Feature, (f64, f64)>,
    total: (f64, f64),
}

#[derive(Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
enum Feature {
    FromInput(usize, String),
    FromOutput(usize, String),
    Anywhere(String),
    Depth(usize),
    /// A block parameter the architecture sets: block, parameter, value.
    Param(String, String, String),
}

fn features(architecture: &[BlockRef]) -> Vec<Feature> {
    let n = architecture.len();
    let mut out = vec![Feature::Depth(n)];
    for (i, block) in architecture.iter().enumerate() {
        out.push(Feature::FromInput(i, block.name.clone()));
        out.push(Feature::FromOutput(n - 1 - i, block.name.clone()));
        out.push(Feature::Anywhere(block.name.clone()));
        for param in &block.params {
            out.push(Feature::Param(block.name.clone(), param.name.clone(), format!("{:?}", param.value)));
        }
    }
    out
}

impl Model {
    fn learn(&mut self, trial: &Trial) {
        let Some(objective) = trial.objective.filter(|o| o.is_finite() && is_scored(trial)) else { return };
        let add = |slot: &mut (f64, f64)| {
            slot.0 += objective;
            slot.1 += 1.0;
        };
        add(&mut self.total);
        for feature in features(&trial.architecture) {
            add(self.means.entry(feature).or_default());
        }
    }

    /// The predicted objective (lower is better): the mean of the features' means, a
    /// feature never seen counting as the overall mean.
    fn predict(&self, architecture: &[BlockRef]) -> f64 {
        let prior = if self.total.1 > 0.0 { self.total.0 / self.total.1 } else { 0.0 };
        let all = features(architecture);
        let sum: f64 = all.iter().map(|f| self.means.get(f).filter(|s| s.1 > 0.0).map_or(prior, |s| s.0 / s.1)).sum();
        sum / all.len() as f64
    }
}

use msh_plugin_sdk::prelude::*;

/// Same blocks with the same parameters.
fn same_architecture(a: &[BlockRef], b: &[BlockRef]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| x.name == y.name && format!("{:?}", x.params) == format!("{:?}", y.params))
}

const DRAWS: usize = 256;

/// A candidate: architecture and hyper-parameters.
type Candidate = (Vec<BlockRef>, Vec<(String, f64)>);

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct LocalSearch {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    beam: Beam,
    /// Untried neighbours of each beam member, by trial id (listed on first use).
    untried: HashMap<u64, Vec<Candidate>>,
    hparam_moves: bool,
    model: Model,
    explore: f64,
    initial: usize,
    /// Blocks that can begin an architecture, in the order the first starts try them
    /// (none without `block_starts`), and the starts proposed so far.
    stems: Vec<String>,
    starts: usize,
    /// (predicted, actual) for recent trials, each predicted before the model learnt it:
    /// the model orders neighbours only while it ranks them well.
    checks: std::collections::VecDeque<(f64, f64)>,
}

/// Recent trials the model is judged on, and the share of their pairs it must rank right
/// (once there are 20 pairs) to keep ordering neighbours.
const CHECKS: usize = 24;
const TRUSTED: f64 = 0.55;

impl LocalSearch {
    /// Whether the model ranks the recent trials (each predicted before it learnt them)
    /// well enough to be followed.
    fn trusted(&self) -> bool {
        let (mut right, mut pairs) = (0usize, 0usize);
        for (i, a) in self.checks.iter().enumerate() {
            for b in self.checks.iter().skip(i + 1) {
                if a.1 != b.1 && a.0 != b.0 {
                    pairs += 1;
                    right += usize::from((a.0 < b.0) == (a.1 < b.1));
                }
            }
        }
        pairs < 20 || right as f64 / pairs as f64 >= TRUSTED
    }

    fn neighbourhood(&mut self, trial: &Trial) -> Vec<Candidate> {
        let mut all: Vec<Candidate> =
            neighbours(&self.space, &trial.architecture).into_iter().map(|a| (a, trial.hparams.clone())).collect();
        if self.hparam_moves {
            all.extend(
                hparam_neighbours(&self.space, &trial.hparams).into_iter().map(|h| (trial.architecture.clone(), h)),
            );
        }
        self.rng.shuffle(&mut all);
        all
    }

    /// The blocks a start may begin with (those that read the input), in a random order.
    fn stems(&mut self) -> Vec<String> {
        let mut stems: Vec<String> = self
            .space
            .blocks
            .iter()
            .filter(|b| output_rank(&self.space, &b.name, self.space.input_rank).is_some())
            .map(|b| b.name.clone())
            .collect();
        self.rng.shuffle(&mut stems);
        stems
    }

    /// A shallow start that begins with `stem`, unseen, recorded in `seen`.
    fn start_with(&mut self, stem: &str) -> Option<Proposal> {
        let (min_depth, max_depth) = depth_bounds(&self.space);
        for _ in 0..DRAWS {
            let depth = self.rng.range(min_depth as i64, (min_depth + 1).min(max_depth) as i64).max(1) as usize;
            let mut architecture = random_architecture(&self.space, depth, &mut self.rng);
            architecture[0] = block_ref(stem);
            let hparams = sample_hparams(&self.space, &mut self.rng);
            if fits(&self.space, &architecture) && self.seen.insert(&architecture, &hparams) {
                return Some(Proposal { architecture, hparams, parent: None, teacher: None });
            }
        }
        None
    }

    fn one(&mut self) -> Option<Proposal> {
        // Random shallow starts first, so that one unlucky start does not decide the
        // search; the first of them begin with each block that can read the input in
        // turn, since the block that reads the raw data matters most and a climb from a
        // poor one is slow.
        if let Some(stem) = self.stems.get(self.starts).cloned() {
            self.starts += 1;
            if let Some(start) = self.start_with(&stem) {
                return Some(start);
            }
        }
        let beam: Vec<Trial> = if self.seen.len() < self.initial { Vec::new() } else { self.beam.trials().to_vec() };
        let trusted = self.trusted();
        for parent in &beam {
            if !self.untried.contains_key(&parent.id) {
                let listed = self.neighbourhood(parent);
                self.untried.insert(parent.id, listed);
            }
            let untried = self.untried.get_mut(&parent.id).expect("listed above");
            untried.retain(|(a, h)| !self.seen.contains(a, h));
            if untried.is_empty() {
                continue;
            }
            // The model sees blocks and their parameters, not hyper-parameters, so it cannot
            // rank a hyper-parameter step: those are drawn at random, in proportion.
            let (tweaks, moves): (Vec<usize>, Vec<usize>) =
                (0..untried.len()).partition(|&i| same_architecture(&untried[i].0, &parent.architecture));
            let pick = if moves.is_empty() || self.rng.chance(tweaks.len() as f64 / untried.len() as f64) {
                tweaks[self.rng.below(tweaks.len())]
            } else if !trusted || self.rng.chance(self.explore) {
                moves[self.rng.below(moves.len())]
            } else {
                let predicted: Vec<f64> = moves.iter().map(|&i| self.model.predict(&untried[i].0)).collect();
                let best = (0..moves.len()).min_by(|&i, &j| predicted[i].total_cmp(&predicted[j])).expect("not empty");
                moves[best]
            };
            let (architecture, hparams) = untried.swap_remove(pick);
            self.seen.insert(&architecture, &hparams);
            return Some(Proposal { architecture, hparams, parent: Some(parent.id), teacher: None });
        }
        // Starts are shallow (as in Model Search: growing a network that works beats
        // repairing a deep one); restarts and starts that would repeat take any depth.
        let (min_depth, max_depth) = depth_bounds(&self.space);
        let preferred = if self.seen.len() < self.initial {
            (min_depth, (min_depth + 1).min(max_depth))
        } else {
            (min_depth, max_depth)
        };
        unseen_random_preferring(&self.space, &mut self.seen, preferred, DRAWS, &mut self.rng)
    }
}

msh_plugin_sdk::settings! {
    /// The `searcher.config` keys local search reads.
    struct LocalSettings {
        beam_size: usize = 8 => "best trials whose neighbourhoods are explored before a random restart",
        hparam_moves: bool = true => "whether moving one hyper-parameter counts as a neighbour",
        explore: f64 = 0.5 => "chance of trying a random neighbour instead of the best predicted",
        initial: usize = 4 => "random shallow starts before the first local move",
        block_starts: bool = true => "whether the starts first begin with each block that can read the input, one each",
    }
}

impl Search for LocalSearch {
    fn settings() -> Vec<Setting> {
        LocalSettings::declare()
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let settings = LocalSettings::parse(&context)?;
        let mut search = Self {
            beam: Beam::new(settings.beam_size),
            hparam_moves: settings.hparam_moves,
            explore: settings.explore,
            initial: settings.initial,
            stems: Vec::new(),
            starts: 0,
            model: Model::default(),
            checks: std::collections::VecDeque::new(),
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            untried: HashMap::new(),
            space,
        };
        if settings.block_starts {
            search.stems = search.stems();
        }
        Ok(search)
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        if self.model.total.1 >= 3.0 && is_scored(&trial) {
            self.checks.push_back((self.model.predict(&trial.architecture), score(&trial)));
            if self.checks.len() > CHECKS {
                self.checks.pop_front();
            }
        }
        self.model.learn(&trial);
        if self.beam.offer(&trial) {
            let kept: Vec<u64> = self.beam.trials().iter().map(|t| t.id).collect();
            self.untried.retain(|id, _| kept.contains(id));
        }
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        Ok((0..count).map_while(|_| self.one()).collect())
    }
    fn save(&self) -> Option<Vec<u8>> {
        save_state(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        restore_keeping_rng(self, state, |s| &mut s.rng)
    }
}

export_search!(LocalSearch);
