//! Model Search's linear-model searcher: ridge regression of the objective on the blocks
//! one-hot by depth (architectures padded with "empty" at the head), then the architecture
//! the model rates best. That is found exactly, depth by depth over the ranks the blocks
//! accept; when it was tried already, the best-rated unseen candidate among the best
//! trial's neighbours and random draws (with block parameters and hyper-parameters varied)
//! is proposed instead. Random proposals until `trials_before_fit` trials are scored, and
//! with probability `explore` afterwards.

use msh_plugin_sdk::prelude::*;
use msh_plugin_sdk::surrogate::*;

struct LinearModel {
    /// Feature count and columns per depth.
    encoding: PositionEncoding,
    /// Weights per feature and the intercept.
    fit: Option<(Vec<f64>, f64)>,
    penalty: f64,
    remove_outliers: bool,
}

impl LinearModel {
    /// Rows kept for fitting: with 10 or more, those under both the 90th percentile and ten
    /// times the median (Model Search's outlier rule: diverging trials would dominate).
    fn kept_rows<'a>(&self, rows: &'a [(Vec<usize>, f64)]) -> Vec<&'a (Vec<usize>, f64)> {
        if !self.remove_outliers || rows.len() < 10 {
            return rows.iter().collect();
        }
        let mut sorted: Vec<f64> = rows.iter().map(|r| r.1).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((q * (sorted.len() - 1) as f64).ceil() as usize).min(sorted.len() - 1)];
        let limit = at(0.9).min(10.0 * at(0.5));
        let kept: Vec<_> = rows.iter().filter(|r| r.1 < limit).collect();
        if kept.len() < 2 { rows.iter().collect() } else { kept }
    }

    /// Ridge regression with an unpenalised intercept, by conjugate gradients on the normal
    /// equations (features are 0/1, so products are counts).
    fn ridge(&self, rows: &[(Vec<usize>, f64)]) -> (Vec<f64>, f64) {
        let rows = self.kept_rows(rows);
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
        (weights, intercept)
    }
}
msh_plugin_sdk::settings! {
    /// The `searcher.config` keys of the linear model (besides `Surrogate`'s).
    struct LinearSettings {
        ridge_penalty: f64 = 0.001 => "L2 penalty of the ridge regression",
        remove_outliers: bool = true => "fit without losses over the 90th percentile or 10x the median",
    }
}

impl Model for LinearModel {
    const EXPLORE: f64 = 0.1;

    type Settings = LinearSettings;

    fn new(settings: LinearSettings, _space: &SearchSpace, encoding: &PositionEncoding) -> Result<Self, String> {
        let penalty = settings.ridge_penalty;
        if !(penalty.is_finite() && penalty >= 0.0) {
            return Err(format!("setting `ridge_penalty` is {penalty}; it must be a non-negative number"));
        }
        Ok(Self {
            encoding: encoding.clone(),
            fit: None,
            // A tiny ridge keeps the normal equations solvable with few rows.
            penalty: penalty.max(1e-9),
            remove_outliers: settings.remove_outliers,
        })
    }

    fn fit(&mut self, rows: &[(Vec<usize>, f64)]) {
        self.fit = Some(self.ridge(rows));
    }

    fn predict(&self, features: &[usize]) -> f64 {
        let Some((weights, intercept)) = &self.fit else { return 0.0 };
        intercept + features.iter().map(|&f| weights[f]).sum::<f64>()
    }

    /// The architecture the model rates best among all that fit the space: a minimum over
    /// (depth, rank) states, "empty" ending the architecture.
    fn best_architecture(&self, space: &SearchSpace) -> Option<Vec<BlockRef>> {
        let (weights, _) = self.fit.as_ref()?;
        let (min_depth, max_depth) = depth_bounds(space);
        let width = self.encoding.width();
        let empty = |d: usize| weights[d * width + width - 1];
        // Cost of stopping after depth d: every later depth empty.
        let tail = |d: usize| (d..max_depth).map(empty).sum::<f64>();
        // best[rank] = (cost so far, blocks) over architectures of the current depth.
        let mut states: Vec<(u8, f64, Vec<BlockRef>)> = vec![(space.input_rank, 0.0, Vec::new())];
        let mut answer: Option<(f64, Vec<BlockRef>)> = None;
        for d in 0..max_depth {
            let mut next: Vec<(u8, f64, Vec<BlockRef>)> = Vec::new();
            for (rank, cost, blocks) in &states {
                for (b, block) in space.blocks.iter().enumerate() {
                    let Some(out) = output_rank(space, &block.name, *rank) else { continue };
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

export_search!(Surrogate<LinearModel>);
