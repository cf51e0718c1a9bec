//! Searchers that fit a model of the objective (a surrogate) and propose the unseen
//! candidate it predicts best: architectures as one-hot blocks by depth, candidate pools,
//! and `Surrogate`, the whole search around a `Model`.

use crate::moves::*;
use crate::rng::Rng;
use crate::search::*;
use crate::settings::{SettingReader, Settings};
use crate::space::*;
use crate::types::{BlockRef, Context, Proposal, SearchSpace, Setting, Trial};

/// Random candidates ranked per proposal, besides the best trial's neighbours.
const DRAWS: usize = 512;

/// Block names by depth as one-hot features: feature `d * (blocks + 1) + b` is set when
/// the space's block `b` sits at depth `d`; `b = blocks` marks a depth the architecture
/// does not reach (Model Search's EMPTY_BLOCK, aligned at the head).
#[derive(Debug, Clone)]
pub struct PositionEncoding {
    names: Vec<String>,
    depth: usize,
}

impl PositionEncoding {
    pub fn new(space: &SearchSpace) -> Self {
        Self { names: space.blocks.iter().map(|b| b.name.clone()).collect(), depth: depth_bounds(space).1 }
    }

    /// Columns per depth: the blocks and "empty".
    pub fn width(&self) -> usize {
        self.names.len() + 1
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// How many features there are.
    pub fn len(&self) -> usize {
        self.depth * self.width()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column of block `name` (`None` for a block outside the space).
    pub fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The set features of `architecture`, one per depth; blocks outside the space and
    /// depths beyond the space's maximum are left out.
    pub fn features(&self, architecture: &[BlockRef]) -> Vec<usize> {
        (0..self.depth)
            .filter_map(|d| match architecture.get(d) {
                Some(block) => self.column(&block.name).map(|b| d * self.width() + b),
                None => Some(d * self.width() + self.names.len()),
            })
            .collect()
    }

    /// The block name of a column (`None` for "empty").
    pub fn name(&self, column: usize) -> Option<&str> {
        self.names.get(column).map(String::as_str)
    }
}

/// A candidate proposal for a surrogate to rank.
pub type Candidate = (Vec<BlockRef>, Vec<(String, f64)>, Option<u64>);

/// Candidates around `best` (every unseen neighbour, with its hyper-parameters or one
/// hyper-parameter step) and `draws` random ones (depths over the space's range, each block
/// parameter drawn with probability `param_p`, hyper-parameters from `best` mutated with
/// probability `hparam_p`), none of them seen, in random order (so that the first of equals
/// is a random one).
pub fn candidate_pool(
    space: &SearchSpace,
    seen: &Seen,
    best: Option<&Trial>,
    draws: usize,
    (param_p, hparam_p): (f64, f64),
    rng: &mut Rng,
) -> Vec<Candidate> {
    let mut pool: Vec<Candidate> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut push = |architecture: Vec<BlockRef>, hparams: Vec<(String, f64)>, parent: Option<u64>| {
        if !seen.contains(&architecture, &hparams) && keys.insert(trial_key(&architecture, &hparams)) {
            pool.push((architecture, hparams, parent));
        }
    };
    if let Some(best) = best {
        for architecture in neighbours(space, &best.architecture) {
            push(architecture, best.hparams.clone(), Some(best.id));
        }
        for hparams in hparam_neighbours(space, &best.hparams) {
            push(best.architecture.clone(), hparams, Some(best.id));
        }
    }
    let (min_depth, max_depth) = depth_bounds(space);
    for _ in 0..draws {
        let depth = rng.range(min_depth as i64, max_depth as i64) as usize;
        let architecture: Vec<BlockRef> = random_architecture(space, depth, rng)
            .into_iter()
            .map(|b| random_params(space, &b.name, param_p, rng))
            .collect();
        if !fits(space, &architecture) {
            continue;
        }
        let hparams = mutated_hparams(space, best.map(|b| b.hparams.as_slice()), hparam_p, rng);
        push(architecture, hparams, None);
    }
    rng.shuffle(&mut pool);
    pool
}

/// The candidate `predict` rates lowest (the first of equals), as a proposal.
pub fn best_predicted(pool: Vec<Candidate>, predict: impl Fn(&[BlockRef]) -> f64) -> Option<Proposal> {
    let mut best: Option<(f64, Candidate)> = None;
    for candidate in pool {
        let predicted = predict(&candidate.0);
        if best.as_ref().is_none_or(|(b, _)| predicted < *b) {
            best = Some((predicted, candidate));
        }
    }
    best.map(|(_, (architecture, hparams, parent))| Proposal { architecture, hparams, parent, teacher: None })
}

/// A model of the objective over architectures, for `Surrogate`.
pub trait Model: Sized + 'static {
    /// Chance of a random proposal once the model is fitted (the `explore` default).
    const EXPLORE: f64;

    /// The model's own settings (`Surrogate` adds the shared ones, [`SurrogateSettings`]).
    type Settings: Settings;

    fn new(settings: Self::Settings, space: &SearchSpace, encoding: &PositionEncoding) -> Result<Self, String>;

    /// Fits the scored trials: their set features and objective, oldest first.
    fn fit(&mut self, rows: &[(Vec<usize>, f64)]);

    /// The predicted objective of set features (lower is better).
    fn predict(&self, features: &[usize]) -> f64;

    /// The architecture the model rates best, where it can find it directly.
    fn best_architecture(&self, _space: &SearchSpace) -> Option<Vec<BlockRef>> {
        None
    }
}

/// A search around a `Model`: random proposals until `trials_before_fit` trials are
/// scored; then the model is refitted whenever results arrive, and each proposal is its
/// best architecture (if it has one and it is unseen, with the best trial's
/// hyper-parameters), else the unseen candidate it rates best; with probability `explore`,
/// a random one.
pub struct Surrogate<M: Model> {
    model: M,
    fitted: bool,
    space: SearchSpace,
    encoding: PositionEncoding,
    rng: Rng,
    seen: Seen,
    best: Beam,
    rows: Vec<(Vec<usize>, f64)>,
    before_fit: usize,
    explore: f64,
    param_p: f64,
    hparam_p: f64,
}

/// The settings every `Surrogate` reads besides its model's; `explore` defaults to the
/// model's [`Model::EXPLORE`].
#[derive(Debug, Clone)]
pub struct SurrogateSettings<M> {
    pub trials_before_fit: usize,
    pub explore: f64,
    pub param_probability: f64,
    pub hparam_mutation_probability: f64,
    model: std::marker::PhantomData<M>,
}

impl<M: Model> Settings for SurrogateSettings<M> {
    fn read(reader: &mut SettingReader) -> Result<Self, String> {
        Ok(Self {
            trials_before_fit: reader.get(
                "trials_before_fit",
                "scored trials before the model is fitted (random until then)",
                10,
            )?,
            explore: reader.get("explore", "chance of a random proposal once the model is fitted", M::EXPLORE)?,
            param_probability: reader.get(
                "param_probability",
                "chance that a random candidate's block parameter is drawn",
                0.3,
            )?,
            hparam_mutation_probability: reader.get(
                "hparam_mutation_probability",
                "chance that a candidate's hyper-parameters change",
                0.3,
            )?,
            model: std::marker::PhantomData,
        })
    }
}

impl<M: Model> Surrogate<M> {
    fn one(&mut self) -> Option<Proposal> {
        if !self.fitted || self.rng.chance(self.explore) {
            let depths = depth_bounds(&self.space);
            return unseen_random(&self.space, &mut self.seen, depths, DRAWS, &mut self.rng);
        }
        let best = self.best.best().cloned();
        let hparams = mutated_hparams(&self.space, best.as_ref().map(|b| b.hparams.as_slice()), 0.0, &mut self.rng);
        if let Some(architecture) = self.model.best_architecture(&self.space)
            && self.seen.insert(&architecture, &hparams)
        {
            return Some(Proposal { architecture, hparams, parent: best.map(|b| b.id), teacher: None });
        }
        let pool =
            candidate_pool(&self.space, &self.seen, best.as_ref(), DRAWS, (self.param_p, self.hparam_p), &mut self.rng);
        let proposal = best_predicted(pool, |a| self.model.predict(&self.encoding.features(a)))?;
        self.seen.insert(&proposal.architecture, &proposal.hparams);
        Some(proposal)
    }
}

impl<M: Model> Search for Surrogate<M> {
    fn settings() -> Vec<Setting> {
        let mut settings = SurrogateSettings::<M>::declare();
        settings.extend(M::Settings::declare());
        settings
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let encoding = PositionEncoding::new(&space);
        // The model's settings are read first, so that its errors come first.
        let model = M::new(M::Settings::parse(&context)?, &space, &encoding)?;
        let shared = SurrogateSettings::<M>::parse(&context)?;
        Ok(Self {
            model,
            fitted: false,
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            best: Beam::new(1),
            rows: Vec::new(),
            before_fit: shared.trials_before_fit.max(2),
            explore: shared.explore,
            param_p: shared.param_probability,
            hparam_p: shared.hparam_mutation_probability,
            encoding,
            space,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        self.best.offer(&trial);
        if is_scored(&trial) {
            self.rows.push((self.encoding.features(&trial.architecture), score(&trial)));
            // Refitted at the next proposal, once for all that arrived.
            self.fitted = false;
        }
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        if !self.fitted && self.rows.len() >= self.before_fit {
            self.model.fit(&self.rows);
            self.fitted = true;
        }
        Ok((0..count).map_while(|_| self.one()).collect())
    }

    /// What the trials taught: the model is refitted from the rows at the next proposal.
    fn save(&self) -> Option<Vec<u8>> {
        save_state(&(&self.seen, &self.best, &self.rows))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        (self.seen, self.best, self.rows) = restore_state(state)?;
        self.fitted = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{SpaceBlock, TrialKind, TrialStatus};

    fn space() -> SearchSpace {
        let block =
            |name: &str| SpaceBlock { name: name.into(), description: String::new(), ranks: vec![], params: vec![] };
        SearchSpace { blocks: vec![block("a"), block("b")], input_rank: 0, min_depth: 1, max_depth: 3, hparams: vec![] }
    }

    #[test]
    fn positions_are_one_hot_with_empty_depths() {
        let encoding = PositionEncoding::new(&space());
        assert_eq!(encoding.len(), 9);
        assert_eq!(encoding.features(&[block_ref("b"), block_ref("a")]), vec![1, 3, 8]);
    }

    #[test]
    fn the_pool_holds_no_seen_trial_and_the_best_predicted_wins() {
        let space = space();
        let mut seen = Seen::default();
        seen.insert(&[block_ref("a")], &[]);
        let best = Trial {
            id: 4,
            architecture: vec![block_ref("a")],
            hparams: vec![],
            status: TrialStatus::Completed,
            kind: TrialKind::Single,
            objective: Some(1.0),
            accuracy: None,
            parameters: 1,
            parent: None,
            inherited: 0,
            epochs: 1,
            error: None,
        };
        let mut rng = Rng::new(1);
        let pool = candidate_pool(&space, &seen, Some(&best), 50, (0.0, 0.0), &mut rng);
        assert!(pool.iter().all(|(a, h, _)| !seen.contains(a, h)));
        // Predicted: the number of `b` blocks, fewest best; `a,a` and `a,a,a` tie at 0.
        let pick = best_predicted(pool, |a| a.iter().filter(|b| b.name == "b").count() as f64).unwrap();
        assert!(pick.architecture.iter().all(|b| b.name == "a"), "{pick:?}");
    }
}
