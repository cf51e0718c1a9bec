//! Local search, msh's default searcher: propose unseen one-move neighbours (a block
//! replaced, inserted or removed, a block parameter stepped, a hyper-parameter moved) of
//! the best trial so far, in random order. When every neighbour of the best has been tried,
//! go on with the next best of a beam of `beam_size`; when the whole beam is spent, restart
//! from a random architecture. Each trial costs the same whatever the history's length:
//! trials are observed once, neighbourhoods are listed once per beam member.

use std::collections::HashMap;

use msh_plugin_sdk::*;

const DRAWS: usize = 256;

/// A candidate: architecture and hyper-parameters.
type Candidate = (Vec<BlockRef>, Vec<(String, f64)>);

struct LocalSearch {
    space: SearchSpace,
    rng: Rng,
    seen: Seen,
    beam: Beam,
    /// Untried neighbours of each beam member, by trial id (listed on first use).
    untried: HashMap<u64, Vec<Candidate>>,
    hparam_moves: bool,
}

impl LocalSearch {
    fn neighbourhood(&mut self, trial: &Trial) -> Vec<Candidate> {
        let mut all: Vec<Candidate> = neighbours(&self.space, &trial.architecture)
            .into_iter()
            .map(|a| (a, trial.hparams.clone()))
            .collect();
        if self.hparam_moves {
            all.extend(
                hparam_neighbours(&self.space, &trial.hparams).into_iter().map(|h| (trial.architecture.clone(), h)),
            );
        }
        self.rng.shuffle(&mut all);
        all
    }

    fn one(&mut self) -> Option<Proposal> {
        let beam: Vec<Trial> = self.beam.trials().to_vec();
        for parent in &beam {
            if !self.untried.contains_key(&parent.id) {
                let listed = self.neighbourhood(parent);
                self.untried.insert(parent.id, listed);
            }
            let untried = self.untried.get_mut(&parent.id).expect("listed above");
            while let Some((architecture, hparams)) = untried.pop() {
                if self.seen.insert(&architecture, &hparams) {
                    return Some(Proposal { architecture, hparams, parent: Some(parent.id), teacher: None });
                }
            }
        }
        let (min_depth, max_depth) = depth_bounds(&self.space);
        for _ in 0..DRAWS {
            let depth = self.rng.range(min_depth as i64, max_depth as i64) as usize;
            let architecture = random_architecture(&self.space, depth, &mut self.rng);
            let hparams = sample_hparams(&self.space, &mut self.rng);
            if self.seen.insert(&architecture, &hparams) {
                return Some(Proposal { architecture, hparams, parent: None, teacher: None });
            }
        }
        None
    }
}

impl Search for LocalSearch {
    fn settings() -> Vec<Setting> {
        vec![
            setting("beam_size", "best trials whose neighbourhoods are explored before a random restart", 8),
            setting("hparam_moves", "whether moving one hyper-parameter counts as a neighbour", true),
        ]
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        Ok(Self {
            beam: Beam::new(config(&context, "beam_size", 8usize)?),
            hparam_moves: config(&context, "hparam_moves", true)?,
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            untried: HashMap::new(),
            space,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
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
}

export_search!(LocalSearch);
