//! Regularized evolution (Real et al. 2019): tournament selection among the most recent
//! `population_size` completed trials (the oldest age out), then one mutation.
//!
//! Settings: `population_size` (20), `sample_size` (5). Until the population is full,
//! proposals are random.

use msh_plugin_sdk::*;

struct RegularizedEvolution;

impl Guest for RegularizedEvolution {
    fn propose(context: Context, space: SearchSpace, history: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let population_size: usize = config(&context, "population_size").unwrap_or(20).max(2);
        let sample_size: usize = config(&context, "sample_size").unwrap_or(5).clamp(1, population_size);
        let (min_depth, max_depth) = depth_bounds(&space);
        let mut rng = Rng::for_call(&context, history.len());

        // Aging: the population is the newest completed trials, by id.
        let mut done = scored(&history);
        done.sort_by_key(|t| t.id);
        let population = &done[done.len().saturating_sub(population_size)..];

        let proposals = (0..count)
            .map(|_| {
                if population.len() < population_size {
                    let depth = rng.range(min_depth as i64, max_depth as i64) as usize;
                    let architecture = random_architecture(&space, depth, &mut rng);
                    return Proposal {
                        architecture,
                        hparams: sample_hparams(&space, &mut rng),
                        parent: None,
                        teacher: None,
                    };
                }
                let parent = (0..sample_size)
                    .map(|_| population[rng.below(population.len())])
                    .min_by(|a, b| {
                        a.objective.unwrap_or(f64::INFINITY).total_cmp(&b.objective.unwrap_or(f64::INFINITY))
                    })
                    .expect("sample_size >= 1");
                let mut architecture = parent.architecture.clone();
                let mut hparams = parent.hparams.clone();
                match rng.below(4) {
                    0 if architecture.len() < max_depth => {
                        architecture.insert(rng.below(architecture.len() + 1), random_block(&space, &mut rng))
                    }
                    1 if architecture.len() > min_depth => {
                        architecture.remove(rng.below(architecture.len()));
                    }
                    2 if !space.hparams.is_empty() => {
                        let range = &space.hparams[rng.below(space.hparams.len())];
                        set_hparam(&mut hparams, &range.name, sample_hparam(range, &mut rng));
                    }
                    _ => {
                        let at = rng.below(architecture.len().max(1));
                        if at < architecture.len() {
                            architecture[at] = random_block(&space, &mut rng);
                        }
                    }
                }
                Proposal { architecture, hparams, parent: Some(parent.id), teacher: None }
            })
            .collect();
        Ok(proposals)
    }
}

export_searcher!(RegularizedEvolution);
