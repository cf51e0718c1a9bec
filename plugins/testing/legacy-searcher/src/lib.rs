//! A searcher of the frozen 0.1.0 contract (stateless: the whole history in every call):
//! copies the best trial and replaces its last block in turn, else proposes random blocks.
//! It checks that msh keeps running plugins built before 0.2.0.

wit_bindgen::generate!({ world: "searcher", path: "../../../plugin-sdk/wit-0.1.0" });

use msh::plugin::types::{BlockRef, TrialStatus};

struct Legacy;

impl Guest for Legacy {
    fn propose(context: Context, space: SearchSpace, history: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        let pick = |i: u64| space.blocks[(i % space.blocks.len() as u64) as usize].clone();
        let best = history
            .iter()
            .filter(|t| matches!(t.status, TrialStatus::Completed))
            .min_by(|a, b| a.objective.unwrap_or(f64::INFINITY).total_cmp(&b.objective.unwrap_or(f64::INFINITY)));
        let n = history.len() as u64 + context.seed;
        Ok((0..count as u64)
            .map(|i| match best {
                Some(t) => {
                    let mut architecture = t.architecture.clone();
                    if let Some(last) = architecture.last_mut() {
                        *last = BlockRef { name: pick(n + i), params: vec![] };
                    }
                    Proposal { architecture, hparams: t.hparams.clone(), parent: Some(t.id), teacher: None }
                }
                None => Proposal {
                    architecture: (0..space.min_depth.max(1) as u64)
                        .map(|d| BlockRef { name: pick(n + i + d), params: vec![] })
                        .collect(),
                    hparams: vec![],
                    parent: None,
                    teacher: None,
                },
            })
            .collect())
    }
}

export!(Legacy);
