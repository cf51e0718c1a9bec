//! A searcher that traps on the third `propose` of every instance: msh must rebuild it by
//! replaying what it was told, and carry on. Otherwise it proposes unseen random trials.

use msh_plugin_sdk::*;

struct Flaky {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    calls: u32,
}

impl Search for Flaky {
    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        Ok(Self { space, rng: Rng::new(context.seed), seen: Seen::default(), calls: 0 })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        self.calls += 1;
        if self.calls == 3 {
            panic!("the third call of this instance");
        }
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        let depths = depth_bounds(&self.space);
        Ok((0..count).map_while(|_| unseen_random(&self.space, &mut self.seen, depths, 256, &mut self.rng)).collect())
    }
}

export_search!(Flaky);
