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
        let (min_depth, max_depth) = depth_bounds(&space);
        let proposals = (0..count)
            .map(|_| {
                let depth = rng.range(min_depth as i64, max_depth as i64) as usize;
                let architecture = random_architecture(&space, depth, &mut rng);
                Proposal { architecture, hparams: sample_hparams(&space, &mut rng), parent: None, teacher: None }
            })
            .collect();
        Ok(proposals)
    }
}

export_searcher!(RandomSearch);
