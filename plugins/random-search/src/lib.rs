//! Random search: every proposal is a fresh architecture of random depth and blocks, with
//! random hyper-parameters. The baseline every other searcher must beat.

use msh_plugin_sdk::*;

struct RandomSearch;

impl Guest for RandomSearch {
    fn propose(context: Context, space: SearchSpace, history: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let mut rng = Rng::for_call(&context, history.len());
        let proposals = (0..count)
            .map(|_| {
                let depth = rng.range(space.min_depth.max(1) as i64, space.max_depth.max(space.min_depth).max(1) as i64);
                let architecture = (0..depth).map(|_| random_block(&space, &mut rng)).collect();
                Proposal { architecture, hparams: sample_hparams(&space, &mut rng), parent: None, teacher: None }
            })
            .collect();
        Ok(proposals)
    }
}

export_searcher!(RandomSearch);
