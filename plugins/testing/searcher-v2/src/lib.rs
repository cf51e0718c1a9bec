//! A searcher of the frozen 0.2.0 contract (a live resource, without `save` or `restore`):
//! every architecture of the space in turn, shallowest first, skipping those it was told
//! of. It checks that msh keeps running, and resuming, plugins built before 0.3.0.

wit_bindgen::generate!({ world: "searcher", path: "../../../plugin-sdk/wit-0.2.0" });

use std::cell::RefCell;
use std::collections::HashSet;

use exports::msh::plugin::search::{Guest, GuestSearcher};
use msh::plugin::types::{BlockRef, Context, Proposal, SearchSpace, Setting, Trial};

struct V2;

impl Guest for V2 {
    type Searcher = Odometer;

    fn settings() -> Vec<Setting> {
        Vec::new()
    }
}

struct Odometer(RefCell<State>);

struct State {
    blocks: Vec<String>,
    depths: (usize, usize),
    seen: HashSet<String>,
    /// The next architecture: block indices, one per position.
    digits: Vec<usize>,
}

fn key(architecture: &[BlockRef]) -> String {
    architecture.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(",")
}

impl State {
    /// Moves the odometer on; `false` past the deepest architecture.
    fn step(&mut self) -> bool {
        for digit in self.digits.iter_mut().rev() {
            *digit += 1;
            if *digit < self.blocks.len() {
                return true;
            }
            *digit = 0;
        }
        self.digits.push(0);
        self.digits.len() <= self.depths.1
    }
}

impl GuestSearcher for Odometer {
    fn new(_context: Context, space: SearchSpace) -> Self {
        let min = space.min_depth.max(1) as usize;
        Odometer(RefCell::new(State {
            blocks: space.blocks.into_iter().map(|b| b.name).collect(),
            depths: (min, (space.max_depth as usize).max(min)),
            seen: HashSet::new(),
            digits: vec![0; min],
        }))
    }

    fn observe(&self, trials: Vec<Trial>) {
        let mut state = self.0.borrow_mut();
        state.seen.extend(trials.iter().map(|t| key(&t.architecture)));
    }

    fn propose(&self, running: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        let mut state = self.0.borrow_mut();
        state.seen.extend(running.iter().map(|t| key(&t.architecture)));
        let mut out = Vec::new();
        while out.len() < count as usize && !state.blocks.is_empty() && state.digits.len() <= state.depths.1 {
            let architecture: Vec<BlockRef> =
                state.digits.iter().map(|&d| BlockRef { name: state.blocks[d].clone(), params: vec![] }).collect();
            state.step();
            if state.seen.insert(key(&architecture)) {
                out.push(Proposal { architecture, hparams: vec![], parent: None, teacher: None });
            }
        }
        Ok(out)
    }
}

export!(V2);
