//! Grid search: every architecture of the space in turn, shallowest first, each block with
//! its default parameters and each block accepting the rank of the one before, crossed
//! with every combination of the hyper-parameters' `choices` (a range without choices
//! takes its middle: geometric for a log range). For small spaces, and for measuring a
//! whole space (a metrics table for `msh bench searchers`).

use msh_plugin_sdk::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "msh_plugin_sdk::serde")]
struct GridSearch {
    space: SearchSpace,
    seen: Seen,
    /// The next architecture: its depth and one block index per position (an odometer).
    depth: usize,
    digits: Vec<usize>,
    /// Hyper-parameter combinations, and the next one for the current architecture.
    hparams: Vec<Vec<(String, f64)>>,
    next_hparams: usize,
    done: bool,
}

fn hparam_grid(space: &SearchSpace) -> Vec<Vec<(String, f64)>> {
    let mut grid: Vec<Vec<(String, f64)>> = vec![Vec::new()];
    for range in &space.hparams {
        let values = if range.choices.is_empty() {
            vec![if range.log && range.low > 0.0 {
                (range.low * range.high).sqrt()
            } else {
                (range.low + range.high) / 2.0
            }]
        } else {
            range.choices.clone()
        };
        grid = grid
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.push((range.name.clone(), *v));
                    next
                })
            })
            .collect();
    }
    grid
}

impl GridSearch {
    /// Moves the odometer to the next architecture; `false` past the deepest.
    fn advance(&mut self) -> bool {
        let blocks = self.space.blocks.len();
        for digit in self.digits.iter_mut().rev() {
            *digit += 1;
            if *digit < blocks {
                return true;
            }
            *digit = 0;
        }
        self.depth += 1;
        self.digits = vec![0; self.depth];
        self.depth <= depth_bounds(&self.space).1
    }

    fn current(&self) -> Vec<BlockRef> {
        self.digits.iter().map(|&i| block_ref(&self.space.blocks[i].name)).collect()
    }

    fn one(&mut self) -> Option<Proposal> {
        while !self.done {
            let architecture = self.current();
            if fits(&self.space, &architecture) && self.next_hparams < self.hparams.len() {
                let hparams = self.hparams[self.next_hparams].clone();
                self.next_hparams += 1;
                if self.seen.insert(&architecture, &hparams) {
                    return Some(Proposal { architecture, hparams, parent: None, teacher: None });
                }
                continue;
            }
            self.next_hparams = 0;
            self.done = !self.advance();
        }
        None
    }
}

impl Search for GridSearch {
    fn new(_context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let depth = depth_bounds(&space).0;
        Ok(Self {
            hparams: hparam_grid(&space),
            space,
            seen: Seen::default(),
            depth,
            digits: vec![0; depth],
            next_hparams: 0,
            done: false,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        Ok((0..count).map_while(|_| self.one()).collect())
    }
    fn save(&self) -> Option<Vec<u8>> {
        save_state(self)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        *self = restore_state(state)?;
        Ok(())
    }
}

export_search!(GridSearch);
