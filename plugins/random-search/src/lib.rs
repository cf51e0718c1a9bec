//! Random search: every proposal is a fresh architecture of random depth and blocks (each
//! block accepting the rank of the one before), with random hyper-parameters, never one
//! seen before. The baseline every other searcher must beat.

use msh_plugin_sdk::prelude::*;

/// Draws before giving up on finding an unseen trial.
const DRAWS: usize = 256;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
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
        let depths = depth_bounds(&self.space);
        let proposals = (0..count)
            .map_while(|_| unseen_random(&self.space, &mut self.seen, depths, DRAWS, &mut self.rng))
            .collect();
        Ok(proposals)
    }
    fn save(&self) -> Option<Vec<u8>> {
        save_state(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        restore_keeping_rng(self, state, |s| &mut s.rng)
    }
}

export_search!(RandomSearch);
