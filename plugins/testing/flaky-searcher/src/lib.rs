//! A searcher that traps on the third `propose` of every instance: msh must rebuild it from
//! its latest snapshot, or by replaying what it was told, and carry on. Otherwise it
//! proposes unseen random trials.

use msh_plugin_sdk::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct Flaky {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    /// Calls of this instance (a restored one counts from 0).
    #[serde(skip)]
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

    fn save(&self) -> Option<Vec<u8>> {
        save_state(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        restore_keeping_rng(self, state, |s| &mut s.rng)
    }
}

export_search!(Flaky);
