//! Model Search's adaptive coordinate descent: mutate one of the best `beam_size` trials,
//! growing it by a block while the allowed depth permits, otherwise replacing one block.
//!
//! Settings (workflow `searcher.config`): `beam_size` (3), `increase_complexity_probability`
//! (0.9), `increase_complexity_minimum_trials` (5: the allowed depth grows by one per that
//! many completed trials), `hparam_mutation_probability` (0.5).

use msh_plugin_sdk::*;

struct BeamSearch;

impl Guest for BeamSearch {
    fn propose(context: Context, space: SearchSpace, history: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let beam_size: usize = config(&context, "beam_size").unwrap_or(3).max(1);
        let grow_p: f64 = config(&context, "increase_complexity_probability").unwrap_or(0.9);
        let per_level: usize = config(&context, "increase_complexity_minimum_trials").unwrap_or(5).max(1);
        let hparam_p: f64 = config(&context, "hparam_mutation_probability").unwrap_or(0.5);
        let (min_depth, max_depth) = depth_bounds(&space);

        let mut rng = Rng::for_call(&context, history.len());
        let beam = top_k(&history, beam_size);
        let allowed_depth = (min_depth + completed_in_search(&context, &history) / per_level).min(max_depth);
        let proposals = (0..count)
            .map(|_| {
                let Some(parent) = rng.choose(&beam).copied() else {
                    // Nothing completed yet: a random architecture of minimum depth.
                    let architecture = random_architecture(&space, min_depth, &mut rng);
                    return Proposal {
                        architecture,
                        hparams: sample_hparams(&space, &mut rng),
                        parent: None,
                        teacher: None,
                    };
                };
                let mut architecture = parent.architecture.clone();
                if architecture.len() < allowed_depth && rng.chance(grow_p) {
                    architecture.push(random_block(&space, &mut rng));
                } else if !architecture.is_empty() {
                    let at = rng.below(architecture.len());
                    let before = architecture[at].name.clone();
                    // Prefer a different block when the space has one.
                    for _ in 0..8 {
                        architecture[at] = random_block(&space, &mut rng);
                        if architecture[at].name != before {
                            break;
                        }
                    }
                }
                let mut hparams = parent.hparams.clone();
                for range in &space.hparams {
                    let missing = !hparams.iter().any(|(n, _)| *n == range.name);
                    if missing || rng.chance(hparam_p / space.hparams.len().max(1) as f64) {
                        set_hparam(&mut hparams, &range.name, sample_hparam(range, &mut rng));
                    }
                }
                Proposal { architecture, hparams, parent: Some(parent.id), teacher: None }
            })
            .collect();
        Ok(proposals)
    }
}

export_searcher!(BeamSearch);
