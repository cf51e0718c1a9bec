//! Harmonica (Hazan, Klivans and Yuan 2017), as Model Search runs it: each (depth, block)
//! pair is a ±1 variable; a Lasso fits the objective on the variables' products up to
//! `degree` (a sparse, low-degree polynomial: the Fourier basis of functions on ±1), the
//! `monomials` largest terms are kept, and the unseen candidate the polynomial rates best
//! is proposed. Candidates are the best trial's neighbours and random draws with block
//! parameters and hyper-parameters varied; what the polynomial ignores stays random, which
//! is Harmonica's exploration. Random proposals until `trials_before_fit` are scored.

use msh_plugin_sdk::prelude::*;
use msh_plugin_sdk::surrogate::*;

/// Most polynomial terms the Lasso fits; higher degrees are dropped whole beyond it.
const MAX_TERMS: usize = 2048;
/// Most recent scored trials the Lasso fits.
const MAX_ROWS: usize = 256;
/// Coordinate-descent sweeps at most.
const SWEEPS: usize = 100;

/// A product of variables (feature indices) and its coefficient.
type Term = (Vec<usize>, f64);

struct Harmonica {
    encoding: PositionEncoding,
    /// The sparse polynomial.
    terms: Vec<Term>,
    alpha: f64,
    degree: usize,
    monomials: usize,
}

/// ±1 values of every variable for a set of features.
fn signs(encoding: &PositionEncoding, features: &[usize]) -> Vec<f64> {
    let mut x = vec![-1.0; encoding.len()];
    features.iter().for_each(|&f| x[f] = 1.0);
    x
}

/// Every product of 1..=`degree` distinct variables among `active`, lowest degrees first,
/// each whole degree only while the total stays within `MAX_TERMS`.
fn products(active: &[usize], degree: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut level: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..degree {
        let next: Vec<Vec<usize>> = level
            .iter()
            .flat_map(|term| {
                let start = term.last().map_or(0, |&last| active.iter().position(|&a| a == last).unwrap_or(0) + 1);
                active[start..].iter().map(move |&v| {
                    let mut t = term.clone();
                    t.push(v);
                    t
                })
            })
            .collect();
        if next.is_empty() || out.len() + next.len() > MAX_TERMS {
            break;
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    out
}

/// Lasso by coordinate descent on `columns` (one per term, over the rows) with an
/// unpenalised intercept: minimises `|y - Xw|^2 / 2n + alpha |w|_1`.
fn lasso(columns: &[Vec<f64>], y: &[f64], alpha: f64) -> Vec<f64> {
    let n = y.len() as f64;
    let mean_y = y.iter().sum::<f64>() / n;
    let centred: Vec<Vec<f64>> = columns
        .iter()
        .map(|c| {
            let mean = c.iter().sum::<f64>() / n;
            c.iter().map(|v| v - mean).collect()
        })
        .collect();
    let norms: Vec<f64> = centred.iter().map(|c| c.iter().map(|v| v * v).sum::<f64>()).collect();
    let mut residual: Vec<f64> = y.iter().map(|v| v - mean_y).collect();
    let mut w = vec![0.0; columns.len()];
    for _ in 0..SWEEPS {
        let mut largest_change = 0.0f64;
        for (j, column) in centred.iter().enumerate() {
            if norms[j] == 0.0 {
                continue;
            }
            let rho: f64 = column.iter().zip(&residual).map(|(x, r)| x * r).sum::<f64>() + norms[j] * w[j];
            let threshold = n * alpha;
            let next = if rho > threshold {
                (rho - threshold) / norms[j]
            } else if rho < -threshold {
                (rho + threshold) / norms[j]
            } else {
                0.0
            };
            let change = next - w[j];
            if change != 0.0 {
                residual.iter_mut().zip(column).for_each(|(r, x)| *r -= change * x);
                w[j] = next;
                largest_change = largest_change.max(change.abs());
            }
        }
        if largest_change < 1e-6 {
            break;
        }
    }
    w
}

msh_plugin_sdk::settings! {
    /// The `searcher.config` keys of Harmonica (besides `Surrogate`'s).
    struct HarmonicaSettings {
        lasso_alpha: f64 = 0.05 => "L1 penalty of the Lasso (on standardised objectives)",
        degree: usize = 3 => "highest degree of the polynomial's terms (1-3)",
        monomials: usize = 5 => "terms of the polynomial kept",
    }
}

impl Model for Harmonica {
    const EXPLORE: f64 = 0.0;

    type Settings = HarmonicaSettings;

    fn new(settings: HarmonicaSettings, _space: &SearchSpace, encoding: &PositionEncoding) -> Result<Self, String> {
        let degree = settings.degree;
        if !(1..=3).contains(&degree) {
            return Err(format!("setting `degree` is {degree}; it must be 1, 2 or 3"));
        }
        let alpha = settings.lasso_alpha;
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(format!("setting `lasso_alpha` is {alpha}; it must be a non-negative number"));
        }
        Ok(Self { encoding: encoding.clone(), terms: Vec::new(), alpha, degree, monomials: settings.monomials.max(1) })
    }

    fn fit(&mut self, rows: &[(Vec<usize>, f64)]) {
        let rows = &rows[rows.len().saturating_sub(MAX_ROWS)..];
        let x: Vec<Vec<f64>> = rows.iter().map(|(features, _)| signs(&self.encoding, features)).collect();
        // Objectives standardised, so that `alpha` means the same on every scale.
        let n = rows.len() as f64;
        let mean = rows.iter().map(|r| r.1).sum::<f64>() / n;
        let spread = (rows.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-12);
        let y: Vec<f64> = rows.iter().map(|r| (r.1 - mean) / spread).collect();
        // Only variables that differ between rows can explain anything.
        let active: Vec<usize> = (0..self.encoding.len()).filter(|&v| x.iter().any(|row| row[v] != x[0][v])).collect();
        let terms = products(&active, self.degree);
        let columns: Vec<Vec<f64>> =
            terms.iter().map(|t| x.iter().map(|row| t.iter().map(|&v| row[v]).product()).collect()).collect();
        let weights = lasso(&columns, &y, self.alpha);
        let mut fitted: Vec<Term> = terms.into_iter().zip(weights).filter(|(_, w)| *w != 0.0).collect();
        fitted.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        fitted.truncate(self.monomials);
        self.terms = fitted;
    }

    fn predict(&self, features: &[usize]) -> f64 {
        let x = signs(&self.encoding, features);
        self.terms.iter().map(|(term, w)| w * term.iter().map(|&v| x[v]).product::<f64>()).sum()
    }
}

export_search!(Surrogate<Harmonica>);
