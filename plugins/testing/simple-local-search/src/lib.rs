//! The baseline the default searcher must beat, written as a new user would from the SDK's
//! README: unseen one-move neighbours of the best trial in random order; a random
//! architecture when the best has none left. `msh bench searchers` compares against it.

use msh_plugin_sdk::prelude::*;

struct SimpleLocalSearch {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    best: Option<Trial>,
}

impl Search for SimpleLocalSearch {
    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        Ok(Self { space, rng: Rng::new(context.seed), seen: Seen::default(), best: None })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        if is_scored(&trial) && self.best.as_ref().is_none_or(|b| score(&trial) < score(b)) {
            self.best = Some(trial);
        }
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        let mut proposals = Vec::new();
        for _ in 0..count {
            let mut options = match &self.best {
                Some(best) => neighbours(&self.space, &best.architecture),
                None => Vec::new(),
            };
            self.rng.shuffle(&mut options);
            let hparams =
                self.best.as_ref().map_or_else(|| sample_hparams(&self.space, &mut self.rng), |b| b.hparams.clone());
            let parent = self.best.as_ref().map(|b| b.id);
            match options.into_iter().find(|a| !self.seen.contains(a, &hparams)) {
                Some(architecture) => {
                    self.seen.insert(&architecture, &hparams);
                    proposals.push(Proposal { architecture, hparams, parent, teacher: None });
                }
                None => {
                    let (min, max) = depth_bounds(&self.space);
                    for _ in 0..256 {
                        let depth = self.rng.range(min as i64, max as i64) as usize;
                        let architecture = random_architecture(&self.space, depth, &mut self.rng);
                        let hparams = sample_hparams(&self.space, &mut self.rng);
                        if self.seen.insert(&architecture, &hparams) {
                            proposals.push(Proposal { architecture, hparams, parent: None, teacher: None });
                            break;
                        }
                    }
                }
            }
        }
        Ok(proposals)
    }
}

export_search!(SimpleLocalSearch);
