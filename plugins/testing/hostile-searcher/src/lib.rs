//! A searcher that proposes what no trainer can use, one way per call, and then valid
//! trials: msh must reject each bad proposal without training it, name the searcher and
//! the value, and go on with the search.

use msh_plugin_sdk::prelude::*;

struct Hostile {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    calls: usize,
}

/// The bad proposals, in order: hyper-parameters out of the workflow's space or unknown to
/// it, then a block parameter no block accepts.
const BAD_HPARAMS: [(&str, f64); 6] = [
    ("epochs", 1e9),
    ("batch_size", -5.0),
    ("gradient_clip", -1.0),
    ("optimizer", 99.0),
    ("learning_rate", f64::NAN),
    ("no_such_setting", 1.0),
];

impl Search for Hostile {
    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        Ok(Self { space, rng: Rng::new(context.seed), seen: Seen::default(), calls: 0 })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        let depths = depth_bounds(&self.space);
        let mut proposals = Vec::new();
        for _ in 0..count {
            self.calls += 1;
            let block = self.space.blocks[0].name.clone();
            let bad = |hparams: Vec<(String, f64)>, params: Vec<Param>| Proposal {
                architecture: vec![BlockRef { name: block.clone(), params }],
                hparams,
                parent: None,
                teacher: None,
            };
            let proposal = match self.calls {
                n @ 1..=6 => {
                    let (name, value) = BAD_HPARAMS[n - 1];
                    bad(vec![(name.into(), value)], vec![])
                }
                7 => bad(vec![], vec![int("no_such_param", 1 << 40)]),
                _ => match unseen_random(&self.space, &mut self.seen, depths, 256, &mut self.rng) {
                    Some(p) => p,
                    None => break,
                },
            };
            proposals.push(proposal);
        }
        Ok(proposals)
    }
}

export_search!(Hostile);
