//! Regularized evolution (Real et al. 2019): tournament selection among the
//! `population_size` trials that completed most recently (the oldest age out, in the order
//! they finished), then one mutation: an unseen neighbour of the winner (a block replaced,
//! inserted or removed, a block parameter stepped, or a hyper-parameter moved). Until the
//! population is full, proposals are random.

use std::collections::VecDeque;

use msh_plugin_sdk::prelude::*;

const DRAWS: usize = 64;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct RegularizedEvolution {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    population: VecDeque<Trial>,
    population_size: usize,
    sample_size: usize,
}

impl RegularizedEvolution {
    fn random(&mut self) -> Option<Proposal> {
        let depths = depth_bounds(&self.space);
        unseen_random(&self.space, &mut self.seen, depths, DRAWS, &mut self.rng)
    }

    fn one(&mut self) -> Option<Proposal> {
        if self.population.len() < self.population_size {
            return self.random();
        }
        let parent = (0..self.sample_size)
            .map(|_| &self.population[self.rng.below(self.population.len())])
            .min_by(|a, b| score(a).total_cmp(&score(b)))
            .cloned()
            .expect("sample_size >= 1");
        let mut children: Vec<(Vec<BlockRef>, Vec<(String, f64)>)> = neighbours(&self.space, &parent.architecture)
            .into_iter()
            .map(|a| (a, parent.hparams.clone()))
            .chain(
                hparam_neighbours(&self.space, &parent.hparams).into_iter().map(|h| (parent.architecture.clone(), h)),
            )
            .collect();
        self.rng.shuffle(&mut children);
        match children.into_iter().find(|(a, h)| !self.seen.contains(a, h)) {
            Some((architecture, hparams)) => {
                self.seen.insert(&architecture, &hparams);
                Some(Proposal { architecture, hparams, parent: Some(parent.id), teacher: None })
            }
            None => self.random(),
        }
    }
}

msh_plugin_sdk::settings! {
    /// The `searcher.config` keys regularized evolution reads.
    struct EvolutionSettings {
        population_size: usize = 20 => "how many of the most recently completed trials compete",
        sample_size: usize = 5 => "trials drawn for each tournament",
    }
}

impl Search for RegularizedEvolution {
    fn settings() -> Vec<Setting> {
        EvolutionSettings::declare()
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let settings = EvolutionSettings::parse(&context)?;
        let population_size = settings.population_size.max(2);
        Ok(Self {
            sample_size: settings.sample_size.clamp(1, population_size),
            population_size,
            population: VecDeque::new(),
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            space,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        if is_scored(&trial) {
            // Aging: the population is the most recent completions, oldest first.
            self.population.push_back(trial);
            if self.population.len() > self.population_size {
                self.population.pop_front();
            }
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

export_search!(RegularizedEvolution);
