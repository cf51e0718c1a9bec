//! The report's sections, each an HTML fragment with its plot: objective per trial,
//! accuracy against size, lineage, blocks, hyper-parameters, timeline, ensembles,
//! retrain and distill results, the best architecture, the trials and the workflow.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Snapshot;
use super::svg::{Axis, Plot, escape, short};
use msh_store::{ParamValue, TrialRecord, TrialStatus};

const WIDE: (f64, f64) = (860.0, 300.0);
const SMALL: (f64, f64) = (420.0, 260.0);
/// About the most marks a plot draws: beyond it a plot keeps the marks that give it its
/// shape and an even spread of the rest (and says so), the timeline adds trials up into
/// time bins, so that a page of 100,000 trials opens in a browser.
const MARKS: usize = 2000;
/// Time bins of an aggregated timeline.
const BINS: usize = 200;
/// Rows of the trial table's first page, drawn before the script pages the rest.
const PAGE: usize = 100;

/// Every section, in reading order.
pub fn all(s: &Snapshot) -> String {
    [summary(s), plots(s), trials(s), workflow(s)].concat()
}

/// The sections that plot the run (what `msh ui` redraws now and then).
pub fn plots(s: &Snapshot) -> String {
    [
        objective(s),
        curves(s),
        accuracy(s),
        lineage(s),
        blocks(s),
        hparams(s),
        timeline(s),
        ensembles(s),
        refinements(s),
        architecture(s),
    ]
    .concat()
}

/// Which of `n` marks a plot draws: those `keep` names, and every k-th for about `MARKS`.
fn thinned(n: usize, keep: impl Fn(usize) -> bool) -> impl Fn(usize) -> bool {
    let stride = n.div_ceil(MARKS).max(1);
    move |i| stride == 1 || i % stride == 0 || keep(i)
}

/// Says how many of the trials a thinned plot shows (nothing when it shows all).
fn shown(shown: usize, total: usize, kept: &str) -> String {
    if shown == total {
        return String::new();
    }
    format!("<p class=\"legend thinned\">{shown} of {total} trials shown: {kept} and an even sample of the rest</p>\n")
}

/// A trial's status as pages show it: `stale` for a running trial whose worker is gone.
fn status_of(s: &Snapshot, t: &TrialRecord) -> &'static str {
    if s.stale.contains_key(&t.id) { "stale" } else { t.status.name() }
}

fn section(id: &str, title: &str, content: &str) -> String {
    format!("<section id=\"{id}\">\n<h2>{}</h2>\n{content}</section>\n", escape(title))
}

fn kind_of<'a>(s: &'a Snapshot, t: &TrialRecord) -> &'a str {
    s.stages.iter().find(|st| st.name == t.stage).map_or("", |st| st.kind.as_str())
}

/// Trials of search stages that finished, in id order.
fn searched<'a>(s: &'a Snapshot) -> Vec<&'a TrialRecord> {
    s.trials.iter().filter(|t| kind_of(s, t) == "search" && t.status.is_finished()).collect()
}

/// The task's headline metric of a trial (test, else validation): accuracy or R².
fn headline(t: &TrialRecord) -> Option<f64> {
    let of = |m: &msh_train::Metrics| m.accuracy.or(m.r2);
    t.test.as_ref().and_then(of).or_else(|| t.valid.as_ref().and_then(of))
}

fn headline_name(s: &Snapshot) -> &'static str {
    let classification = s.trials.iter().any(|t| t.valid.as_ref().is_some_and(|m| m.accuracy.is_some()));
    if classification { "accuracy" } else { "R²" }
}

fn param_text(value: &ParamValue) -> String {
    match value {
        ParamValue::Int(v) => v.to_string(),
        ParamValue::Float(v) => short(*v),
        ParamValue::Flag(v) => v.to_string(),
        ParamValue::Text(v) => v.clone(),
        ParamValue::Ints(v) => format!("{v:?}"),
    }
}

fn block_text(b: &msh_store::BlockRef) -> String {
    if b.params.is_empty() {
        return b.name.clone();
    }
    let params: Vec<String> = b.params.iter().map(|(n, v)| format!("{n}={}", param_text(v))).collect();
    format!("{}({})", b.name, params.join(", "))
}

fn arch_text(t: &TrialRecord) -> String {
    t.architecture.iter().map(block_text).collect::<Vec<_>>().join(", ")
}

fn status_shape(status: TrialStatus) -> &'static str {
    match status {
        TrialStatus::Completed => "circle",
        TrialStatus::Stopped => "triangle",
        _ => "cross",
    }
}

/// Why a trial failed, or who held a stale one and until when.
fn note(s: &Snapshot, t: &TrialRecord) -> Option<String> {
    match s.stale.get(&t.id) {
        Some(stale) => Some(format!(
            "{} is gone ({}; lease until +{:.1}s); it runs again once a worker requeues it",
            stale.worker,
            stale.reason,
            stale.lease_until - s.meta.created
        )),
        None => t.error.clone(),
    }
}

fn tooltip(s: &Snapshot, t: &TrialRecord) -> String {
    let objective = t.objective.map_or("-".into(), |o| format!("{o:.4}"));
    let metric = headline(t).map_or(String::new(), |m| format!(", {m:.4}"));
    let note = note(s, t).map_or(String::new(), |e| format!("\n{e}"));
    format!(
        "trial {} ({}): objective {objective}{metric}, {} params\n{}{note}",
        t.id,
        status_of(s, t),
        t.parameters,
        arch_text(t)
    )
}

/// What a child changed from its parent: blocks inserted, removed or replaced, block
/// parameters and hyper-parameters moved.
fn changes(parent: &TrialRecord, child: &TrialRecord) -> String {
    let (a, b) = (&parent.architecture, &child.architecture);
    let mut out = Vec::new();
    if a.len() == b.len() {
        for (d, (x, y)) in a.iter().zip(b).enumerate() {
            if x.name != y.name {
                out.push(format!("depth {d}: {} → {}", x.name, y.name));
            } else if x.params != y.params {
                out.push(format!("depth {d}: {} → {}", block_text(x), block_text(y)));
            }
        }
    } else {
        let (short_one, long_one, sign) = if a.len() < b.len() { (a, b, "+") } else { (b, a, "−") };
        let skip = (0..long_one.len()).find(|&i| {
            let mut rest = long_one.clone();
            rest.remove(i);
            rest == *short_one
        });
        match skip {
            Some(d) => out.push(format!("{sign}{} at depth {d}", block_text(&long_one[d]))),
            None => out.push(format!("{} → {}", arch_text(parent), arch_text(child))),
        }
    }
    for (name, value) in &child.hparams {
        match parent.hparams.iter().find(|(n, _)| n == name) {
            Some((_, old)) if old != value => out.push(format!("{name} {} → {}", short(*old), short(*value))),
            None => out.push(format!("{name} {}", short(*value))),
            _ => {}
        }
    }
    if out.is_empty() { "same architecture and hyper-parameters".into() } else { out.join("; ") }
}

/// The run's title, trial counts, stages and best trial (what `msh ui` sends with each update).
pub fn summary(s: &Snapshot) -> String {
    let mut html = String::new();
    let description = s.workflow.as_ref().map(|w| w.description.clone()).unwrap_or_default();
    let _ =
        writeln!(html, "<h1>{}</h1>\n<p class=\"lead\">{}</p>", escape(&s.meta.workflow_name), escape(&description));
    let mut counts: Vec<String> = TrialStatus::counts(&s.trials)
        .iter()
        .map(|(st, n)| match st {
            TrialStatus::Running => format!("running {}", n - s.stale.len()),
            _ => format!("{} {n}", st.name()),
        })
        .collect();
    if !s.stale.is_empty() {
        counts.push(format!("stale {} (their worker is gone)", s.stale.len()));
    }
    let _ = writeln!(html, "<p id=\"counts\">{} trials: {}</p>", s.trials.len(), counts.join(", "));
    html.push_str(
        "<table class=\"stages\"><tr><th>stage</th><th>kind</th><th>state</th><th>finished</th><th>result</th></tr>\n",
    );
    for st in &s.stages {
        let state =
            serde_json::to_value(st.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"{state}\">{state}</td><td>{}</td><td>{}</td></tr>",
            escape(&st.name),
            escape(&st.kind),
            st.finished_trials,
            escape(st.message.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table>\n");
    if let Some(best) = best(s) {
        let (what, arch) = match best.members.len() {
            0 => (String::new(), ":"),
            n => (format!(", an ensemble of {n} members"), " in all; its best member:"),
        };
        let _ = writeln!(
            html,
            "<p id=\"best\">Best: trial {} (stage {}{what}), validation loss {:.4}, test {} {}, {} parameters{arch} {}</p>",
            best.id,
            escape(&best.stage),
            best.objective.unwrap_or(f64::NAN),
            headline_name(s),
            headline(best).map_or("-".into(), |m| format!("{m:.4}")),
            best.parameters,
            escape(&arch_text(best))
        );
    }
    format!("<header>\n{html}</header>\n")
}

/// The completed trial with the lowest objective among search, ensemble and distill stages.
fn best(s: &Snapshot) -> Option<&TrialRecord> {
    s.trials
        .iter()
        .filter(|t| {
            t.status == TrialStatus::Completed
                && t.objective.is_some_and(f64::is_finite)
                && matches!(kind_of(s, t), "search" | "ensemble" | "distill")
        })
        .min_by(|a, b| a.score().total_cmp(&b.score()))
}

fn objective(s: &Snapshot) -> String {
    let trials = searched(s);
    if trials.is_empty() {
        return section("objective", "Objective per trial", "<p>No search trial has finished yet.</p>\n");
    }
    let scored: Vec<f64> = trials.iter().filter_map(|t| t.objective).filter(|o| o.is_finite()).collect();
    let log = scored.iter().all(|&o| o > 0.0)
        && scored.iter().cloned().fold(0.0, f64::max) > 20.0 * scored.iter().cloned().fold(f64::INFINITY, f64::min);
    let x = Axis::fit("trial", trials.iter().map(|t| t.id as f64), false);
    let y = Axis::fit("objective (validation loss, lower is better)", scored.iter().copied(), log);
    let top = y.max;
    let mut plot = Plot::new(WIDE.0, WIDE.1, x, y);
    let mut best = f64::INFINITY;
    let mut curve = Vec::new();
    let mut steps = Vec::new();
    for (i, t) in trials.iter().enumerate() {
        if let Some(v) = t.objective.filter(|o| o.is_finite() && t.status == TrialStatus::Completed) {
            if v < best {
                best = v;
                steps.push(i);
            }
            curve.push((t.id as f64, best));
        }
    }
    // The curve drawn through its steps only: the same staircase.
    curve.dedup_by(|b, a| a.1 == b.1);
    let draw = thinned(trials.len(), |i| steps.binary_search(&i).is_ok());
    let mut drawn = 0;
    for (_, t) in trials.iter().enumerate().filter(|(i, _)| draw(*i)) {
        let value = t.objective.filter(|o| o.is_finite());
        let class = format!("trial {}{}", status_of(s, t), if t.members.is_empty() { "" } else { " ensemble" });
        let shape = if t.members.is_empty() { status_shape(t.status) } else { "square" };
        // Trials without an objective sit on the top edge.
        plot.point(t.id as f64, value.unwrap_or(top), shape, &class, &tooltip(s, t));
        drawn += 1;
    }
    if let Some(&(_, last)) = curve.last() {
        curve.push((trials.last().map_or(0.0, |t| t.id as f64), last));
    }
    plot.line(&curve, "best-so-far", true);
    let legend = "<p class=\"legend\"><span class=\"key completed\">● completed</span> \
                  <span class=\"key stopped\">▲ stopped early</span> \
                  <span class=\"key failed\">✕ failed or diverged (top edge)</span> \
                  <span class=\"key ensemble\">■ ensemble</span> \
                  <span class=\"key best-so-far\">— best so far</span></p>\n";
    let note = shown(drawn, trials.len(), "every one that improved on the best so far");
    section("objective", "Objective per trial", &format!("{}{legend}{note}", plot.finish()))
}

/// Curves drawn at most: the best trials and an even sample of the rest.
const CURVES: usize = 150;

/// Learning curves: each search trial's validation loss per epoch, stopped trials marked
/// where they stopped, the best trial on top, and the early-stopping rule's decision
/// epochs (rungs) as vertical lines.
fn curves(s: &Snapshot) -> String {
    let title = "Learning curves: validation loss per epoch";
    let trials: Vec<&TrialRecord> =
        searched(s).into_iter().filter(|t| t.members.is_empty() && !t.losses.is_empty()).collect();
    if trials.is_empty() {
        return section("curves", title, "<p>No search trial has recorded a learning curve yet.</p>\n");
    }
    let mut by_score: Vec<usize> = (0..trials.len()).collect();
    by_score.sort_by(|&a, &b| trials[a].score().total_cmp(&trials[b].score()));
    let best: Vec<usize> =
        by_score.iter().copied().filter(|&i| trials[i].status == TrialStatus::Completed).take(10).collect();
    let stride = trials.len().div_ceil(CURVES).max(1);
    let drawn: Vec<usize> = (0..trials.len()).filter(|i| i % stride == 0 || best.contains(i)).collect();
    let losses = || drawn.iter().flat_map(|&i| trials[i].losses.iter().copied()).filter(|l| l.is_finite());
    let epochs = drawn.iter().map(|&i| trials[i].losses.len()).max().unwrap_or(1);
    let log = losses().all(|l| l > 0.0) && losses().fold(0.0, f64::max) > 20.0 * losses().fold(f64::INFINITY, f64::min);
    let x = Axis::fit("epoch", [1.0, epochs as f64], false);
    let y = Axis::fit("validation loss", losses(), log);
    let (low, high) = (y.min, y.max);
    let mut plot = Plot::new(WIDE.0, WIDE.1, x, y);
    let rule = s.workflow.as_ref().and_then(|w| w.early_stopping);
    let mut rungs: Vec<usize> = rule
        .map(|r| (1..=epochs).filter(|&e| msh_engine::early_stop::is_decision_epoch(&r, e)).collect())
        .unwrap_or_default();
    // Every epoch is a decision under the median rule: lines would hide the curves.
    if rungs.len() == epochs {
        rungs.clear();
    }
    for &epoch in &rungs {
        plot.line(&[(epoch as f64, low), (epoch as f64, high)], "rung", false);
    }
    // The best trial last, so that it is drawn on top.
    let top = best.first().copied();
    for &i in drawn.iter().filter(|&&i| Some(i) != top).chain(top.as_ref()) {
        let t = trials[i];
        let points: Vec<(f64, f64)> =
            t.losses.iter().enumerate().filter(|(_, l)| l.is_finite()).map(|(e, l)| ((e + 1) as f64, *l)).collect();
        let class = if Some(i) == top { "curve best".to_string() } else { format!("curve {}", status_of(s, t)) };
        plot.titled_line(&points, &class, &tooltip(s, t));
        if let (TrialStatus::Stopped, Some(&(e, l))) = (t.status, points.last()) {
            plot.point(e, l, "triangle", "trial stopped", &format!("stopped at epoch {e}: {}", tooltip(s, t)));
        }
    }
    let rung_key = match rule {
        Some(r) if !rungs.is_empty() => {
            let list: Vec<String> = rungs.iter().map(ToString::to_string).collect();
            format!(" <span class=\"key rung\">┆ rungs ({}): epochs {}</span>", r.mode.name(), list.join(", "))
        }
        _ => String::new(),
    };
    let legend = format!(
        "<p class=\"legend\"><span class=\"key completed\">— completed</span> \
         <span class=\"key stopped\">▲ stopped early</span> <span class=\"key best-so-far\">— best trial</span>{rung_key}</p>\n"
    );
    let note = if drawn.len() < trials.len() {
        format!(
            "<p class=\"legend thinned\">{} of {} curves shown: the ten best and an even sample of the rest</p>\n",
            drawn.len(),
            trials.len()
        )
    } else {
        String::new()
    };
    section("curves", title, &format!("{}{legend}{note}", plot.finish()))
}

fn accuracy(s: &Snapshot) -> String {
    let name = headline_name(s);
    let points: Vec<(&TrialRecord, f64)> = s
        .trials
        .iter()
        .filter(|t| t.status == TrialStatus::Completed && t.parameters > 0)
        .filter_map(|t| headline(t).filter(|m| m.is_finite()).map(|m| (t, m)))
        .collect();
    let title = format!("Test {name} against parameters");
    if points.is_empty() {
        return section("accuracy", &title, "<p>No completed trial yet.</p>\n");
    }
    let x = Axis::fit("parameters", points.iter().map(|(t, _)| t.parameters as f64), true);
    let y = Axis::fit(&format!("test {name}"), points.iter().map(|p| p.1), false);
    let mut plot = Plot::new(WIDE.0, WIDE.1, x, y);
    // The Pareto front: no other trial is smaller and at least as good.
    let mut by_size = points.clone();
    by_size.sort_by(|a, b| a.0.parameters.cmp(&b.0.parameters).then(b.1.total_cmp(&a.1)));
    let mut front = Vec::new();
    let mut on_front = std::collections::BTreeSet::new();
    let mut best = f64::NEG_INFINITY;
    for (t, m) in by_size {
        if m > best {
            best = m;
            front.push((t.parameters as f64, m));
            on_front.insert(t.id);
        }
    }
    let draw = thinned(points.len(), |i| on_front.contains(&points[i].0.id));
    let mut drawn = 0;
    for (_, (t, m)) in points.iter().enumerate().filter(|(i, _)| draw(*i)) {
        let class = if t.members.is_empty() { "point" } else { "point ensemble" };
        plot.point(
            t.parameters as f64,
            *m,
            if t.members.is_empty() { "circle" } else { "square" },
            class,
            &tooltip(s, t),
        );
        drawn += 1;
    }
    plot.line(&front, "pareto", true);
    let list: Vec<String> = front.iter().map(|(p, m)| format!("{} params: {m:.4}", short(*p))).collect();
    let text = format!("<p class=\"legend\">Pareto front (step line): {}</p>\n", escape(&list.join(" · ")));
    let note = shown(drawn, points.len(), "the Pareto front");
    section("accuracy", &title, &format!("{}{text}{note}", plot.finish()))
}

fn lineage(s: &Snapshot) -> String {
    let trials = searched(s);
    let with_parent = trials.iter().filter(|t| t.parent.is_some_and(|p| s.index(p).is_some())).count();
    if with_parent == 0 {
        return section("lineage", "Lineage", "<p>No trial descends from another (yet).</p>\n");
    }
    // Generation: a trial's distance from a trial without a parent.
    let mut generations = vec![0usize; s.trials.len()];
    for (i, t) in s.trials.iter().enumerate() {
        generations[i] = t.parent.and_then(|p| s.index(p)).filter(|&j| j < i).map_or(0, |j| generations[j] + 1);
    }
    let generation = |id: u64| s.index(id).map_or(0, |i| generations[i]);
    let deepest = trials.iter().map(|t| generation(t.id)).max().unwrap_or(0);
    let x = Axis::fit("trial", trials.iter().map(|t| t.id as f64), false);
    let y = Axis::fit("generation", [0.0, deepest as f64], false);
    let mut plot = Plot::new(WIDE.0, WIDE.1.max(80.0 + 24.0 * deepest as f64), x, y);
    // How the best trial came about.
    let mut chain = Vec::new();
    let mut ancestry = std::collections::BTreeSet::new();
    let mut at = best(s).map(|b| if b.members.is_empty() { b } else { b.parent.and_then(|p| s.trial(p)).unwrap_or(b) });
    while let Some(t) = at.filter(|t| ancestry.insert(t.id)) {
        chain.push(t);
        at = t.parent.and_then(|p| s.trial(p));
    }
    chain.reverse();
    let draw = thinned(trials.len(), |i| ancestry.contains(&trials[i].id));
    let drawn: Vec<&TrialRecord> = trials.iter().enumerate().filter(|(i, _)| draw(*i)).map(|(_, t)| *t).collect();
    for t in &drawn {
        if let Some(parent) = t.parent.and_then(|p| s.trial(p)) {
            let points = [(parent.id as f64, generation(parent.id) as f64), (t.id as f64, generation(t.id) as f64)];
            plot.line(&points, "edge", false);
        }
    }
    for t in &drawn {
        let change = t.parent.and_then(|p| s.trial(p)).map(|p| changes(p, t)).unwrap_or_else(|| "a fresh start".into());
        let title = format!("{}\nfrom {}: {change}", tooltip(s, t), t.parent.map_or("-".into(), |p| p.to_string()));
        plot.point(
            t.id as f64,
            generation(t.id) as f64,
            status_shape(t.status),
            &format!("node {}", status_of(s, t)),
            &title,
        );
    }
    let mut steps = String::from("<ol class=\"ancestry\">\n");
    for (i, t) in chain.iter().enumerate() {
        let what = if i == 0 { format!("start: {}", arch_text(t)) } else { changes(chain[i - 1], t) };
        let _ = writeln!(
            steps,
            "<li>trial {}: {} (objective {})</li>",
            t.id,
            escape(&what),
            t.objective.map_or("-".into(), |o| format!("{o:.4}"))
        );
    }
    steps.push_str("</ol>\n");
    let note = shown(drawn.len(), trials.len(), "the best model's ancestors");
    let content = format!("{}{note}<h3>How the best model came about</h3>\n{steps}", plot.finish());
    section("lineage", "Lineage: parents and what each child changed (hover a node)", &content)
}

fn blocks(s: &Snapshot) -> String {
    let mut usage: BTreeMap<&str, (f64, usize, f64)> = BTreeMap::new();
    for t in searched(s).into_iter().filter(|t| t.members.is_empty()) {
        let Some(o) = t.objective.filter(|o| o.is_finite()) else { continue };
        let mut names: Vec<&str> = t.architecture.iter().map(|b| b.name.as_str()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let slot = usage.entry(name).or_insert((0.0, 0, f64::INFINITY));
            slot.0 += o;
            slot.1 += 1;
            slot.2 = slot.2.min(o);
        }
    }
    if usage.is_empty() {
        return section("blocks", "Blocks against objective", "<p>No scored trial yet.</p>\n");
    }
    let mut rows: Vec<(&str, f64, usize, f64)> =
        usage.into_iter().map(|(n, (sum, c, b))| (n, sum / c as f64, c, b)).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let labels: Vec<String> = rows.iter().map(|r| format!("{} ({})", r.0, r.2)).collect();
    let x = Axis::fit(
        "objective: mean (bar) and best (dot) of the trials using the block",
        rows.iter().flat_map(|r| [r.1, r.3, 0.0]),
        false,
    );
    let y = Axis { label: "block (trials)".into(), min: -0.6, max: rows.len() as f64 - 0.4, log: false };
    let mut plot = Plot::new(WIDE.0, 60.0 + 26.0 * rows.len() as f64, x, y).categories(labels);
    for (i, (name, mean, count, best)) in rows.iter().enumerate() {
        let y = i as f64;
        plot.bar((0.0, y - 0.3), (*mean, y + 0.3), "bar", &format!("{name}: mean {mean:.4} over {count} trials"));
        plot.point(*best, y, "circle", "best", &format!("{name}: best {best:.4}"));
    }
    section("blocks", "Blocks against objective", &plot.finish())
}

fn hparams(s: &Snapshot) -> String {
    let trials: Vec<&TrialRecord> =
        searched(s).into_iter().filter(|t| t.objective.is_some_and(f64::is_finite)).collect();
    let mut names: Vec<&str> = trials.iter().flat_map(|t| t.hparams.iter().map(|(n, _)| n.as_str())).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return section("hparams", "Hyper-parameters against objective", "<p>No hyper-parameters were searched.</p>\n");
    }
    let mut html = String::from("<div class=\"grid\">\n");
    let (mut drawn, mut total) = (0, 0);
    for name in names {
        let points: Vec<(f64, f64, &TrialRecord)> = trials
            .iter()
            .filter_map(|t| {
                t.hparams.iter().find(|(n, _)| n == name).map(|(_, v)| (*v, t.objective.unwrap_or(0.0), *t))
            })
            .collect();
        let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.0), h.max(p.0)));
        let log = lo > 0.0 && hi / lo > 20.0;
        let x = Axis::fit(name, points.iter().map(|p| p.0), log);
        let y = Axis::fit("objective", points.iter().map(|p| p.1), false);
        let mut plot = Plot::new(SMALL.0, SMALL.1, x, y);
        let lowest = (0..points.len()).min_by(|&a, &b| points[a].1.total_cmp(&points[b].1));
        let draw = thinned(points.len(), |i| Some(i) == lowest);
        let picked: Vec<_> = points.iter().enumerate().filter(|(i, _)| draw(*i)).map(|(_, p)| p).collect();
        for (v, o, t) in &picked {
            plot.point(*v, *o, status_shape(t.status), "point", &tooltip(s, t));
        }
        drawn = drawn.max(picked.len());
        total = total.max(points.len());
        html.push_str(&plot.finish());
    }
    html.push_str("</div>\n");
    html.push_str(&shown(drawn, total, "the best trial"));
    section("hparams", "Hyper-parameters against objective", &html)
}

fn timeline(s: &Snapshot) -> String {
    let start = s.meta.created;
    let timed: Vec<&TrialRecord> = s.trials.iter().filter(|t| t.started.is_some()).collect();
    if timed.is_empty() {
        return section("timeline", "Timeline", "<p>No trial has started yet.</p>\n");
    }
    // One lane per trainer (process and trainer number); earlier records without one are
    // packed into lanes by time.
    let mut lanes: Vec<String> = Vec::new();
    let mut ends: Vec<f64> = Vec::new();
    let mut placed = Vec::new();
    let now = msh_store::now();
    for t in &timed {
        let (begin, end) = (t.started.unwrap_or(start), t.finished.unwrap_or(now));
        let lane = match &t.worker {
            Some(worker) => lanes.iter().position(|l| l == worker).unwrap_or_else(|| {
                lanes.push(worker.clone());
                ends.push(0.0);
                lanes.len() - 1
            }),
            None => ends.iter().position(|&e| e <= begin + 1e-3).unwrap_or_else(|| {
                lanes.push(format!("lane {}", lanes.len() + 1));
                ends.push(0.0);
                lanes.len() - 1
            }),
        };
        ends[lane] = ends[lane].max(end);
        placed.push((lane, begin - start, end - start, *t));
    }
    let x = Axis::fit("seconds since the run began", placed.iter().flat_map(|p| [p.1, p.2]), false);
    let y = Axis { label: "trainer".into(), min: -0.6, max: lanes.len() as f64 - 0.4, log: false };
    let (first, last) = (x.min, x.max);
    let mut plot = Plot::new(WIDE.0, 70.0 + 30.0 * lanes.len() as f64, x, y).categories(lanes);
    if placed.len() <= MARKS {
        for (lane, begin, end, t) in placed {
            let title = format!("{}\n{begin:.1}s to {end:.1}s in stage {}", tooltip(s, t), t.stage);
            let class = format!("span {}", status_of(s, t));
            plot.bar((begin, lane as f64 - 0.35), (end, lane as f64 + 0.35), &class, &title);
        }
        return section("timeline", "Timeline: where the time went", &plot.finish());
    }
    // Too many bars to draw one a trial: per trainer and time bin, the share of the bin it
    // was busy (the bar's height) and the trials that ended in it.
    let width = (last - first) / BINS as f64;
    let bin = |t: f64| (((t - first) / width) as usize).min(BINS - 1);
    let mut bins: BTreeMap<(usize, usize), (f64, usize, usize)> = BTreeMap::new();
    for (lane, begin, end, t) in &placed {
        for b in bin(*begin)..=bin(*end) {
            let (from, to) = (first + b as f64 * width, first + (b + 1) as f64 * width);
            bins.entry((*lane, b)).or_default().0 += (end.min(to) - begin.max(from)).max(0.0);
        }
        let slot = bins.entry((*lane, bin(*end))).or_default();
        slot.1 += 1;
        slot.2 += usize::from(matches!(t.status, TrialStatus::Failed | TrialStatus::Diverged));
    }
    for ((lane, b), (busy, ended, failed)) in bins {
        let (from, to) = (first + b as f64 * width, first + (b + 1) as f64 * width);
        let share = (busy / width).clamp(0.0, 1.0);
        let title =
            format!("{from:.1}s to {to:.1}s: busy {:.0}%, {ended} trials ended ({failed} failed)", share * 100.0);
        let class = if failed > 0 { "span bin failed" } else { "span bin" };
        let base = lane as f64 - 0.35;
        plot.bar((from, base), (to, base + 0.7 * share.max(0.05)), class, &title);
    }
    let note = format!(
        "<p class=\"legend thinned\">{} trials in {BINS} time bins: a bar's height is how busy its trainer was; hover for the trials that ended</p>\n",
        placed.len()
    );
    section("timeline", "Timeline: where the time went", &format!("{}{note}", plot.finish()))
}

fn ensembles(s: &Snapshot) -> String {
    let combined: Vec<&TrialRecord> =
        s.trials.iter().filter(|t| t.is_combination() && t.status.is_finished()).collect();
    if combined.is_empty() {
        return section("ensembles", "Ensembles", "<p>No ensemble in this run.</p>\n");
    }
    let mut html = String::new();
    for e in combined {
        let _ = writeln!(
            html,
            "<h3>Trial {} ({}): validation loss {}, test {}</h3>\n<table><tr><th>member</th><th>weight</th><th>validation loss</th><th>test</th><th>architecture</th></tr>",
            e.id,
            escape(&e.stage),
            e.objective.map_or("-".into(), |o| format!("{o:.4}")),
            headline(e).map_or("-".into(), |m| format!("{m:.4}"))
        );
        for (id, weight) in &e.members {
            let m = s.trial(*id);
            let _ = writeln!(
                html,
                "<tr><td>{id}</td><td><svg class=\"weight\" width=\"80\" height=\"8\"><rect width=\"{:.0}\" height=\"8\"/></svg> {weight:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (weight.clamp(0.0, 1.0) * 80.0).max(1.0),
                m.and_then(|m| m.objective).map_or("-".into(), |o| format!("{o:.4}")),
                m.and_then(|m| headline(m)).map_or("-".into(), |v| format!("{v:.4}")),
                m.map_or(String::new(), |m| escape(&arch_text(m)))
            );
        }
        html.push_str("</table>\n");
    }
    section("ensembles", "Ensembles: members and weights", &html)
}

fn refinements(s: &Snapshot) -> String {
    let rows: Vec<&TrialRecord> =
        s.trials.iter().filter(|t| matches!(kind_of(s, t), "retrain" | "distill") && t.status.is_finished()).collect();
    if rows.is_empty() {
        return section("refinements", "Retrain and distill", "<p>No retrain or distill stage in this run.</p>\n");
    }
    let mut html = String::from(
        "<table><tr><th>stage</th><th>trial</th><th>test</th><th>baseline</th><th>baseline test</th><th>parameters</th></tr>\n",
    );
    for t in rows {
        // The baseline: the trial it retrains, or the teacher a student learned from.
        let base = t.parent.or(t.teacher).and_then(|id| s.trial(id));
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.stage),
            t.id,
            headline(t).map_or("-".into(), |m| format!("{m:.4}")),
            base.map_or("-".into(), |b| format!("trial {}", b.id)),
            base.and_then(|b| headline(b)).map_or("-".into(), |m| format!("{m:.4}")),
            t.parameters
        );
    }
    html.push_str("</table>\n");
    for st in s.stages.iter().filter(|st| matches!(st.kind.as_str(), "retrain" | "distill")) {
        if let Some(message) = &st.message {
            let _ = writeln!(html, "<p><b>{}</b>: {}</p>", escape(&st.name), escape(message));
        }
    }
    section("refinements", "Retrain and distill against their baselines", &html)
}

fn architecture(s: &Snapshot) -> String {
    let Some(best) = best(s) else {
        return section("architecture", "The best model", "<p>No completed trial yet.</p>\n");
    };
    // An ensemble is drawn as its best member (its parent).
    let (model, title) = if best.members.is_empty() {
        (best, format!("The best model: trial {}, {} parameters", best.id, best.parameters))
    } else {
        let member = best.parent.and_then(|p| s.trial(p)).unwrap_or(best);
        let title = format!(
            "The best model: trial {}, an ensemble of {} members; its best member, trial {} ({} parameters)",
            best.id,
            best.members.len(),
            member.id,
            member.parameters
        );
        (member, title)
    };
    let shape = s.workflow.as_ref().and_then(|w| w.data.shape.clone());
    let (w, row) = (520.0, 46.0);
    let h = 6.0 + row * (model.architecture.len() as f64 + 2.0);
    let mut svg = format!(r#"<svg class="arch" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#);
    let mut y = 10.0;
    let mut boxes = vec![("input".to_string(), shape.map_or("samples".into(), |s| format!("{s:?}")), "io")];
    for b in &model.architecture {
        let params: Vec<String> = b.params.iter().map(|(n, v)| format!("{n}={}", param_text(v))).collect();
        boxes.push((b.name.clone(), params.join(", "), "block"));
    }
    boxes.push(("head".into(), "flatten, dense to the outputs".into(), "io"));
    for (i, (name, detail, class)) in boxes.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="60" y="{y:.0}" width="400" height="32" rx="6"/><text class="name" x="76" y="{:.0}">{}</text><text class="detail" x="444" y="{:.0}" text-anchor="end">{}</text>"#,
            y + 21.0,
            escape(name),
            y + 21.0,
            escape(detail)
        );
        if i + 1 < boxes.len() {
            let _ = write!(svg, r#"<path class="arrow" d="M260,{:.0}v12"/>"#, y + 32.0);
        }
        y += row;
    }
    svg.push_str("</svg>\n");
    section("architecture", &title, &svg)
}

/// Trials as the table's script reads them: one array per trial (the table's columns,
/// then its note), as JSON that can sit in a `<script>` element. Written by hand: it is
/// the largest part of a large run's page.
pub fn rows_json<'a>(s: &Snapshot, trials: impl IntoIterator<Item = &'a TrialRecord>) -> String {
    let mut out = String::from("[");
    let number = |out: &mut String, v: Option<f64>| match v.filter(|v| v.is_finite()) {
        Some(v) => write!(out, "{v},"),
        None => write!(out, "null,"),
    };
    for (i, t) in trials.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[{},", t.id);
        text(&mut out, &t.stage);
        let _ = write!(out, ",\"{}\",", status_of(s, t));
        let _ = number(&mut out, t.objective);
        let _ = number(&mut out, headline(t));
        let _ = write!(out, "{},{},", t.parameters, t.epochs);
        let _ = number(&mut out, Some(t.train_seconds));
        let _ = match t.parent {
            Some(p) => write!(out, "{p},"),
            None => write!(out, "null,"),
        };
        text(&mut out, &arch_text(t));
        out.push(',');
        match note(s, t) {
            Some(note) => text(&mut out, &note),
            None => out.push_str("null"),
        }
        out.push(']');
    }
    out.push(']');
    out
}

/// `value` as a JSON string, with `<` escaped so that no `</script>` ends the element early.
fn text(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' => out.push_str("\\u003c"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn trials(s: &Snapshot) -> String {
    let mut html = String::from(
        "<input id=\"filter\" type=\"search\" placeholder=\"filter: stage, status, block...\">\n\
         <p class=\"pager\"><button id=\"prev\" type=\"button\">previous</button> <span id=\"page\"></span> \
         <button id=\"next\" type=\"button\">next</button></p>\n\
         <table id=\"trials\" class=\"sortable\"><thead><tr><th>id</th><th>stage</th><th>status</th><th>objective</th>\
         <th>test</th><th>parameters</th><th>epochs</th><th>seconds</th><th>parent</th><th>architecture</th></tr></thead><tbody>\n",
    );
    // The first page, for readers without scripts; the script draws every page from the JSON.
    for t in s.trials.iter().take(PAGE) {
        let status = status_of(s, t);
        let title = note(s, t).map_or(String::new(), |n| format!(" title=\"{}\"", escape(&n)));
        let _ = writeln!(
            html,
            "<tr data-id=\"{}\" class=\"{status}\"{title}><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            t.id,
            t.id,
            escape(&t.stage),
            t.objective.map_or(String::new(), |o| format!("{o:.4}")),
            headline(t).map_or(String::new(), |m| format!("{m:.4}")),
            t.parameters,
            t.epochs,
            t.train_seconds,
            t.parent.map_or(String::new(), |p| p.to_string()),
            escape(&arch_text(t))
        );
    }
    html.push_str("</tbody></table>\n<script type=\"application/json\" id=\"trial-data\">");
    html.push_str(&rows_json(s, &s.trials));
    html.push_str("</script>\n");
    let title = format!("Trials: all {} (click a header to sort, a page at a time)", s.trials.len());
    section("trials-section", &title, &html)
}

fn workflow(s: &Snapshot) -> String {
    let mut html = format!("<pre class=\"workflow\">{}</pre>\n", escape(&s.meta.workflow_text));
    let events = &s.events[s.events.len().saturating_sub(30)..];
    if !events.is_empty() {
        html.push_str("<h3>Last events</h3>\n<pre class=\"events\">");
        for e in events {
            let stage = e.stage.as_deref().map(|s| format!("[{s}] ")).unwrap_or_default();
            let trial = e.trial.map(|t| format!("trial {t}: ")).unwrap_or_default();
            let _ =
                writeln!(html, "+{:.1}s {}{}{}", e.time - s.meta.created, escape(&stage), trial, escape(&e.message));
        }
        html.push_str("</pre>\n");
    }
    section("workflow", &format!("The workflow as run ({})", s.meta.workflow_path.display()), &html)
}

/// One trial in detail (for `msh ui`): metrics, validation loss per epoch, architecture,
/// lineage and error.
pub fn trial_detail(s: &Snapshot, id: u64) -> Option<String> {
    let t = s.trial(id)?;
    let mut html = format!("<h2>Trial {id}</h2>\n<button id=\"close\">close</button>\n<dl>\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(html, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    };
    row("stage", t.stage.clone());
    row("status", status_of(s, t).into());
    if let Some(note) = note(s, t).filter(|_| s.stale.contains_key(&t.id)) {
        row("stale", note);
    }
    row("architecture", arch_text(t));
    row("hyper-parameters", t.hparams.iter().map(|(n, v)| format!("{n}={}", short(*v))).collect::<Vec<_>>().join(", "));
    row("objective", t.objective.map_or("-".into(), |o| format!("{o:.5}")));
    row("validation", t.valid.as_ref().map_or("-".into(), |m| m.headline()));
    row("test", t.test.as_ref().map_or("-".into(), |m| m.headline()));
    row("parameters", format!("{} ({} inherited)", t.parameters, t.inherited));
    row("epochs", format!("{} (best {})", t.epochs, t.best_epoch));
    row("seconds", format!("{:.1} over {} attempt(s)", t.train_seconds, t.attempts));
    if let Some(parent) = t.parent.and_then(|p| s.trial(p)) {
        row("from", format!("trial {}: {}", parent.id, changes(parent, t)));
    }
    if !t.members.is_empty() {
        row("members", t.members.iter().map(|(m, w)| format!("{m}×{w:.3}")).collect::<Vec<_>>().join(", "));
    }
    if let Some(error) = &t.error {
        row("error", error.clone());
    }
    html.push_str("</dl>\n");
    if !t.losses.is_empty() {
        let x = Axis::fit("epoch", (1..=t.losses.len()).map(|e| e as f64), false);
        let y = Axis::fit("validation loss", t.losses.iter().copied(), false);
        let mut plot = Plot::new(SMALL.0, SMALL.1, x, y);
        let points: Vec<(f64, f64)> = t.losses.iter().enumerate().map(|(i, l)| ((i + 1) as f64, *l)).collect();
        plot.line(&points, "loss", false);
        for (e, l) in &points {
            plot.point(*e, *l, "circle", "epoch", &format!("epoch {e}: {l:.4}"));
        }
        html.push_str(&plot.finish());
    }
    Some(html)
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_text_round_trips_and_cannot_end_a_script() {
        let mut out = String::new();
        let value = "a\"b\\c</script>\n\u{1}é";
        super::text(&mut out, value);
        assert!(!out.contains('<'), "{out}");
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), value);
    }
}
