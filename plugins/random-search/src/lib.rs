//! Random search: every proposal is a fresh architecture of random depth and blocks (each
//! block accepting the rank of the one before), with random hyper-parameters, never one
//! seen before. The baseline every other searcher must beat.

use msh_plugin_sdk::*;

/// Draws before giving up on finding an unseen trial.
const DRAWS: usize = 256;

struct RandomSearch {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
}

impl Search for RandomSearch {
    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        Ok(Self { space, rng: Rng::new(context.seed), seen: Seen::default() })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        running.iter().for_each(|t| self.observe(t.clone()));
        let (min_depth, max_depth) = depth_bounds(&self.space);
        let mut proposals = Vec::new();
        for _ in 0..DRAWS {
            if proposals.len() == count as usize {
                break;
            }
            let depth = self.rng.range(min_depth as i64, max_depth as i64) as usize;
            let architecture = random_architecture(&self.space, depth, &mut self.rng);
            let hparams = sample_hparams(&self.space, &mut self.rng);
            if self.seen.insert(&architecture, &hparams) {
                proposals.push(Proposal { architecture, hparams, parent: None, teacher: None });
            }
        }
        Ok(proposals)
    }
}

export_search!(RandomSearch);
