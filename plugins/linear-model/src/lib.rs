//! Model Search's linear-model searcher: ridge regression of the objective on the blocks
//! one-hot by depth (architectures padded with "empty" at the head), then the architecture
//! the model rates best. That is found exactly, depth by depth over the ranks the blocks
//! accept; when it was tried already, the best-rated unseen candidate among the best
//! trial's neighbours and random draws (with block parameters and hyper-parameters varied)
//! is proposed instead. Random proposals until `trials_before_fit` trials are scored, and
//! with probability `explore` afterwards.

use msh_plugin_sdk::*;

/// Random candidates ranked per proposal, besides the best trial's neighbours.
const DRAWS: usize = 512;

struct LinearModel {
    space: SearchSpace,
    encoding: PositionEncoding,
    rng: Rng,
    seen: Seen,
    beam: Beam,
    /// Scored trials: set features and objective.
    rows: Vec<(Vec<usize>, f64)>,
    /// Weights per feature and the intercept, refitted when rows arrive.
    fit: Option<(Vec<f64>, f64)>,
    before_fit: usize,
    penalty: f64,
    remove_outliers: bool,
    explore: f64,
    param_p: f64,
    hparam_p: f64,
}

impl LinearModel {
    /// Rows kept for fitting: with 10 or more, those under both the 90th percentile and ten
    /// times the median (Model Search's outlier rule: diverging trials would dominate).
    fn kept_rows(&self) -> Vec<&(Vec<usize>, f64)> {
        if !self.remove_outliers || self.rows.len() < 10 {
            return self.rows.iter().collect();
        }
        let mut sorted: Vec<f64> = self.rows.iter().map(|r| r.1).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((q * (sorted.len() - 1) as f64).ceil() as usize).min(sorted.len() - 1)];
        let limit = at(0.9).min(10.0 * at(0.5));
        let kept: Vec<_> = self.rows.iter().filter(|r| r.1 < limit).collect();
        if kept.len() < 2 { self.rows.iter().collect() } else { kept }
    }

    /// Ridge regression with an unpenalised intercept, by conjugate gradients on the normal
    /// equations (features are 0/1, so products are counts).
    fn refit(&mut self) {
        let rows = self.kept_rows();
        let n = rows.len() as f64;
        let p = self.encoding.len();
        let mean_y = rows.iter().map(|r| r.1).sum::<f64>() / n;
        let mut mean_x = vec![0.0; p];
        for (features, _) in &rows {
            features.iter().for_each(|&f| mean_x[f] += 1.0 / n);
        }
        // (X_c^T X_c + penalty I) w = X_c^T y_c, with X_c the centred design.
        let apply = |w: &[f64]| -> Vec<f64> {
            let offset: f64 = mean_x.iter().zip(w).map(|(m, w)| m * w).sum();
            let mut out: Vec<f64> = w.iter().map(|w| self.penalty * w).collect();
            let mut total = 0.0;
            for (features, _) in &rows {
                let value: f64 = features.iter().map(|&f| w[f]).sum::<f64>() - offset;
                features.iter().for_each(|&f| out[f] += value);
                total += value;
            }
            out.iter_mut().zip(&mean_x).for_each(|(o, m)| *o -= total * m);
            out
        };
        let mut b = vec![0.0; p];
        for (features, y) in &rows {
            features.iter().for_each(|&f| b[f] += y - mean_y);
        }
        // The centred targets sum to zero, so centring the design changes nothing here.
        let weights = conjugate_gradients(apply, b, (2 * p).min(400));
        let intercept = mean_y - mean_x.iter().zip(&weights).map(|(m, w)| m * w).sum::<f64>();
        self.fit = Some((weights, intercept));
    }

    fn predict(&self, architecture: &[BlockRef]) -> f64 {
        let Some((weights, intercept)) = &self.fit else { return 0.0 };
        intercept + self.encoding.features(architecture).iter().map(|&f| weights[f]).sum::<f64>()
    }

    /// The architecture the model rates best among all that fit the space: a minimum over
    /// (depth, rank) states, "empty" ending the architecture.
    fn best_architecture(&self) -> Option<Vec<BlockRef>> {
        let (weights, _) = self.fit.as_ref()?;
        let (min_depth, max_depth) = depth_bounds(&self.space);
        let width = self.encoding.width();
        let empty = |d: usize| weights[d * width + width - 1];
        // Cost of stopping after depth d: every later depth empty.
        let tail = |d: usize| (d..max_depth).map(empty).sum::<f64>();
        // best[rank] = (cost so far, blocks) over architectures of the current depth.
        let mut states: Vec<(u8, f64, Vec<BlockRef>)> = vec![(self.space.input_rank, 0.0, Vec::new())];
        let mut answer: Option<(f64, Vec<BlockRef>)> = None;
        for d in 0..max_depth {
            let mut next: Vec<(u8, f64, Vec<BlockRef>)> = Vec::new();
            for (rank, cost, blocks) in &states {
                for (b, block) in self.space.blocks.iter().enumerate() {
                    let Some(out) = output_rank(&self.space, &block.name, *rank) else { continue };
                    let cost = cost + weights[d * width + b];
                    match next.iter_mut().find(|s| s.0 == out) {
                        Some(slot) if slot.1 <= cost => {}
                        Some(slot) => *slot = (out, cost, extended(blocks, &block.name)),
                        None => next.push((out, cost, extended(blocks, &block.name))),
                    }
                }
            }
            states = next;
            if d + 1 >= min_depth {
                for (_, cost, blocks) in &states {
                    let total = cost + tail(d + 1);
                    if answer.as_ref().is_none_or(|(best, _)| total < *best) {
                        answer = Some((total, blocks.clone()));
                    }
                }
            }
        }
        answer.map(|(_, blocks)| blocks)
    }

    fn one(&mut self) -> Option<Proposal> {
        let best = self.beam.best().cloned();
        if self.fit.is_none() || self.rng.chance(self.explore) {
            let depths = depth_bounds(&self.space);
            return unseen_random(&self.space, &mut self.seen, depths, DRAWS, &mut self.rng);
        }
        let hparams = mutated_hparams(&self.space, best.as_ref().map(|b| b.hparams.as_slice()), 0.0, &mut self.rng);
        if let Some(architecture) = self.best_architecture()
            && self.seen.insert(&architecture, &hparams)
        {
            return Some(Proposal { architecture, hparams, parent: best.map(|b| b.id), teacher: None });
        }
        let pool =
            candidate_pool(&self.space, &self.seen, best.as_ref(), DRAWS, (self.param_p, self.hparam_p), &mut self.rng);
        let proposal = best_predicted(pool, |a| self.predict(a))?;
        self.seen.insert(&proposal.architecture, &proposal.hparams);
        Some(proposal)
    }
}

fn extended(blocks: &[BlockRef], name: &str) -> Vec<BlockRef> {
    let mut out = blocks.to_vec();
    out.push(block_ref(name));
    out
}

/// Solves `A x = b` for a symmetric positive definite `A` given as a product.
fn conjugate_gradients(apply: impl Fn(&[f64]) -> Vec<f64>, b: Vec<f64>, iterations: usize) -> Vec<f64> {
    let mut x = vec![0.0; b.len()];
    let mut r = b;
    let mut p = r.clone();
    let mut rr: f64 = r.iter().map(|v| v * v).sum();
    for _ in 0..iterations {
        if rr < 1e-20 {
            break;
        }
        let ap = apply(&p);
        let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
        if pap <= 0.0 {
            break;
        }
        let alpha = rr / pap;
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += alpha * p);
        r.iter_mut().zip(&ap).for_each(|(r, ap)| *r -= alpha * ap);
        let next: f64 = r.iter().map(|v| v * v).sum();
        p = r.iter().zip(&p).map(|(r, p)| r + next / rr * p).collect();
        rr = next;
    }
    x
}

impl Search for LinearModel {
    fn settings() -> Vec<Setting> {
        vec![
            setting("trials_before_fit", "scored trials before the model is fitted (random until then)", 10),
            setting("ridge_penalty", "L2 penalty of the ridge regression", 0.001),
            setting("remove_outliers", "fit without losses over the 90th percentile or 10x the median", true),
            setting("explore", "chance of a random proposal once the model is fitted", 0.1),
            setting("param_probability", "chance that a random candidate's block parameter is drawn", 0.3),
            setting("hparam_mutation_probability", "chance that a candidate's hyper-parameters change", 0.3),
        ]
    }

    fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
        if space.blocks.is_empty() {
            return Err("the search space allows no blocks".into());
        }
        let penalty: f64 = config(&context, "ridge_penalty", 0.001)?;
        if !(penalty.is_finite() && penalty >= 0.0) {
            return Err(format!("setting `ridge_penalty` is {penalty}; it must be a non-negative number"));
        }
        Ok(Self {
            encoding: PositionEncoding::new(&space),
            rng: Rng::new(context.seed),
            seen: Seen::default(),
            beam: Beam::new(1),
            rows: Vec::new(),
            fit: None,
            before_fit: config(&context, "trials_before_fit", 10usize)?.max(2),
            // A tiny ridge keeps the normal equations solvable with few rows.
            penalty: penalty.max(1e-9),
            remove_outliers: config(&context, "remove_outliers", true)?,
            explore: config(&context, "explore", 0.1)?,
            param_p: config(&context, "param_probability", 0.3)?,
            hparam_p: config(&context, "hparam_mutation_probability", 0.3)?,
            space,
        })
    }

    fn observe(&mut self, trial: Trial) {
        self.seen.insert(&trial.architecture, &trial.hparams);
        self.beam.offer(&trial);
        if is_scored(&trial) {
            self.rows.push((self.encoding.features(&trial.architecture), score(&trial)));
            // Refitting is deferred to the next proposal.
            self.fit = None;
        }
    }

    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
        for trial in running {
            self.seen.insert(&trial.architecture, &trial.hparams);
        }
        if self.fit.is_none() && self.rows.len() >= self.before_fit {
            self.refit();
        }
        Ok((0..count).map_while(|_| self.one()).collect())
    }
}

export_search!(LinearModel);
