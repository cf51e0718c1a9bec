//! Model Search's adaptive coordinate descent: mutate one of the best `beam_size` trials,
//! growing it by a block (inserted before its first flatten or dense block, where the rank
//! fits) while the allowed depth permits, otherwise replacing one block or stepping one
//! block parameter. Hyper-parameters are mutated too. Proposals already trained or running
//! are skipped; when the mutations of the beam keep repeating, any unseen neighbour of the
//! beam is taken, and failing that a random architecture.

use msh_plugin_sdk::prelude::*;

/// Mutation draws before falling back to the beam's unseen neighbours.
const DRAWS: usize = 64;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct BeamSearch {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    beam: Beam,
    completed: usize,
    grow_p: f64,
    per_level: usize,
    hparam_p: f64,
    param_p: f64,
}

impl BeamSearch {
    fn mutate(&mut self, parent: &Trial, allowed_depth: usize) -> Vec<BlockRef> {
        let space = &self.space;
        let mut architecture = parent.architecture.clone();
        if architecture.len() < allowed_depth && self.rng.chance(self.grow_p) {
            let at = growth_position(space, &architecture);
            let fitting: Vec<Vec<BlockRef>> = space
                .blocks
                .iter()
                .map(|b| {
                    let mut next = architecture.clone();
                    next.insert(at, block_ref(&b.name));
                    next
                })
                .filter(|next| fits(space, next))
                .collect();
            if let Some(next) = self.rng.choose(&fitting) {
                return next.clone();
            }
        }
        if architecture.is_empty() {
            return architecture;
        }
        let at = self.rng.below(architecture.len());
        let specs = space_block(space, &architecture[at].name).map(|b| b.params.clone()).unwrap_or_default();
        if !specs.is_empty() && self.rng.chance(self.param_p) {
            let spec = &specs[self.rng.below(specs.len())];
            let steps = param_steps(spec, param_value(&architecture[at], spec));
            if let Some(value) = self.rng.choose(&steps).cloned() {
                set_param(&mut architecture[at], spec, value);
                return architecture;
            }
        }
        let replacements: Vec<Vec<BlockRef>> = space
            .blocks
            .iter()
            .filter(|b| b.name != architecture[at].name)
            .map(|b| {
                let mut next = architecture.clone();
                next[at] = block_ref(&b.name);
                next
            })
            .filter(|next| fits(space, next))
            .collect();
        self.rng.choose(&replacements).cloned().unwrap_or(architecture)
    }

    fn mutate_hparams(&mut self, parent: &Trial) -> Vec<(String, f64)> {
        let mut hparams = parent.hparams.clone();
        let n = self.space.hparams.len().max(1) as f64;
        for range in &self.space.hparams {
            let missing = !hparams.iter().any(|(name, _)| *name == range.name);
            if missing || self.rng.chance(self.hparam_p / n) {
                set_hparam(&mut hparams, &range.name, sample_hparam(range, &mut self.rng));
            }
        }
        hparams
    }

    fn one(&mut self) -> Option<Proposal> {
        let (min_depth, max_depth) = depth_bounds(&self.space);
        let allowed_depth = (min_depth + self.completed / self.per_level).min(max_depth);
        let beam: Vec<Trial> = self.beam.trials().to_vec();
        for _ in 0..if beam.is_empty() { 0 } else { DRAWS } {
            let parent = &beam[self.rng.below(beam.len())];
            let architecture = self.mutate(parent, allowed_depth);
            let hparams = self.mutate_hparams(parent);
            if self.seen.insert(&architecture, &hparams) {
                return Some(Proposal { architecture, hparams, parent: Some(parent.id), teacher: None });
            }
        }
        for parent in &beam {
            let mut candidates = neighbours(&self.space, &parent.architecture);
            self.rng.shuffle(&mut candidates);
            if let Some(architecture) = candidates.into_iter().find(|a| !self.seen.contains(a, &parent.hparams)) {
                self.seen.insert(&architecture, &parent.hparams);
                return Some(Proposal {
                    architecture,
                    hparams: parent.hparams.clone(),
                    parent: Some(parent.id),
                    teacher: None,
                });
            }
        }
        // Nothing completed yet (Model Search starts at the minimum depth), or the beam's
        // neighbourhoods are spent.
        let preferred = if beam.is_empty() { (min_depth, min_depth) } else { (min_depth, max_depth) };
        unseen_random_preferring(&self.space, &mut self.seen, preferred, DRAWS, &mut self.rng)
    }
}

msh_plugin_sdk::settings! {
    /// The `searcher.config` keys beam search reads.
    struct BeamSettings {
        beam_size: usize = 3 => "how many of the best trials are mutated",
        increase_complexity_probability: f64 = 0.9 => "chance that a mutation adds a block",
        increase_complexity_minimum_trials: usize = 5
            => "completed trials per level of allowed depth above the minimum",
        hparam_mutation_probability: f64 = 0.5 => "chance that the hyper-parameters change",
        param_mutation_probability: f64 = 0.3 => "chance that a replacement steps a block parameter instead",
    }
}

impl Search for BeamSearch {
    fn settings() -> Vec<Setting> {
        BeamSettings::declare()
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let settings = BeamSettings::parse(&context)?;
        Ok(Self {
            beam: Beam::new(settings.beam_size),
            grow_p: settings.increase_complexity_probability,
            per_level: settings.increase_complexity_minimum_trials.max(1),
            hparam_p: settings.hparam_mutation_probability,
            param_p: settings.param_mutation_probability,
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            completed: 0,
            space,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        self.completed += usize::from(is_scored(&trial));
        self.beam.offer(&trial);
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

export_search!(BeamSearch);
