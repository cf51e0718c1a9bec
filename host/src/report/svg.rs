//! A small SVG plot writer: axes with round ticks (linear or log), points, lines, bars
//! and labels, every mark a plain element with a class and a tooltip, so that a page
//! needs no script to show it and a test can count the marks.

use std::fmt::Write as _;

/// Plot area margins: left (tick labels; wider for category names), right, top, bottom
/// (tick and axis labels).
const MARGIN: (f64, f64, f64, f64) = (64.0, 16.0, 12.0, 44.0);

/// Text escaped for SVG and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One axis: its label, range and scale.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub log: bool,
}

impl Axis {
    /// An axis spanning `values` (finite ones; positive ones when `log`), padded by 4%.
    pub fn fit(label: &str, values: impl IntoIterator<Item = f64>, log: bool) -> Self {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            min = min.min(v);
            max = max.max(v);
        }
        if !min.is_finite() {
            (min, max) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        if log {
            let (lo, hi) = (min.log10(), max.log10());
            let pad = ((hi - lo) * 0.04).max(0.05);
            return Self { label: label.into(), min: 10f64.powf(lo - pad), max: 10f64.powf(hi + pad), log };
        }
        let pad = ((max - min) * 0.04).max(if max == min { 0.5f64.max(max.abs() * 0.1) } else { 0.0 });
        Self { label: label.into(), min: min - pad, max: max + pad, log }
    }

    /// Where `v` falls, 0 at `min` to 1 at `max`.
    fn unit(&self, v: f64) -> f64 {
        if self.log {
            (v.max(f64::MIN_POSITIVE).log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        }
    }

    /// Round tick values inside the range (about five; powers of ten on a log axis).
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (lo, hi) = (self.min.log10().ceil() as i32, self.max.log10().floor() as i32);
            let mut ticks: Vec<f64> = (lo..=hi).map(|e| 10f64.powi(e)).collect();
            if ticks.len() < 2 {
                ticks = vec![self.min * 1.05, (self.min * self.max).sqrt(), self.max / 1.05];
            }
            return ticks;
        }
        let span = self.max - self.min;
        let magnitude = 10f64.powf((span / 5.0).log10().floor());
        // The round step giving closest to five ticks.
        let count = |step: f64| ((self.max / step).floor() - (self.min / step).ceil() + 1.0).max(0.0);
        let step = [0.5, 1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .min_by(|a, b| (count(*a) - 5.0).abs().total_cmp(&(count(*b) - 5.0).abs()))
            .unwrap_or(span / 5.0);
        let mut t = (self.min / step).ceil() * step;
        let mut ticks = Vec::new();
        while t <= self.max + step * 1e-9 && ticks.len() < 20 {
            ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
            t += step;
        }
        ticks
    }
}

/// A number as a short tick label.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}K", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else if a >= 1e-3 {
        format!("{v:.4}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

/// A plot being drawn: the axes, then marks in data coordinates.
pub struct Plot {
    width: f64,
    height: f64,
    x: Axis,
    y: Axis,
    left: f64,
    /// Names of the y values 0, 1, ... shown instead of y ticks.
    categories: Option<Vec<String>>,
    body: String,
}

impl Plot {
    pub fn new(width: f64, height: f64, x: Axis, y: Axis) -> Self {
        Self { width, height, x, y, left: MARGIN.0, categories: None, body: String::new() }
    }

    /// Names the y values 0, 1, ... (one row per category), with room for the names.
    pub fn categories(mut self, names: Vec<String>) -> Self {
        let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        self.left = (14.0 + 6.6 * longest as f64).max(MARGIN.0);
        self.categories = Some(names);
        self
    }

    fn px(&self, v: f64) -> f64 {
        self.left + self.x.unit(v).clamp(-0.02, 1.02) * (self.width - self.left - MARGIN.1)
    }

    fn py(&self, v: f64) -> f64 {
        self.height - MARGIN.3 - self.y.unit(v).clamp(-0.02, 1.02) * (self.height - MARGIN.2 - MARGIN.3)
    }

    /// A point with a shape (`circle`, `square`, `triangle`, `cross`), a class and a tooltip.
    pub fn point(&mut self, x: f64, y: f64, shape: &str, class: &str, title: &str) {
        let (cx, cy) = (self.px(x), self.py(y));
        let title = format!("<title>{}</title>", escape(title));
        let _ = match shape {
            "square" => writeln!(
                self.body,
                r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="8" height="8">{title}</rect>"#,
                cx - 4.0,
                cy - 4.0
            ),
            "triangle" => writeln!(
                self.body,
                r#"<polygon class="{class}" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}">{title}</polygon>"#,
                cx,
                cy - 5.0,
                cx - 5.0,
                cy + 4.0,
                cx + 5.0,
                cy + 4.0
            ),
            "cross" => writeln!(
                self.body,
                r#"<path class="{class}" d="M{:.1},{:.1}l8,8m0,-8l-8,8">{title}</path>"#,
                cx - 4.0,
                cy - 4.0
            ),
            _ => writeln!(self.body, r#"<circle class="{class}" cx="{cx:.1}" cy="{cy:.1}" r="4">{title}</circle>"#),
        };
    }

    /// A polyline through `points`; `step` draws a staircase (a best-so-far curve).
    pub fn line(&mut self, points: &[(f64, f64)], class: &str, step: bool) {
        let mut d = String::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            let (px, py) = (self.px(x), self.py(y));
            if i == 0 {
                let _ = write!(d, "M{px:.1},{py:.1}");
            } else if step {
                let _ = write!(d, "H{px:.1}V{py:.1}");
            } else {
                let _ = write!(d, "L{px:.1},{py:.1}");
            }
        }
        if !d.is_empty() {
            let _ = writeln!(self.body, r#"<path class="{class}" d="{d}"/>"#);
        }
    }

    /// A polyline with a tooltip.
    pub fn titled_line(&mut self, points: &[(f64, f64)], class: &str, title: &str) {
        let d: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y))).collect();
        if !d.is_empty() {
            let _ = writeln!(
                self.body,
                r#"<path class="{class}" d="M{}"><title>{}</title></path>"#,
                d.join("L"),
                escape(title)
            );
        }
    }

    /// A bar from (x0, y0) to (x1, y1) in data coordinates.
    pub fn bar(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), class: &str, title: &str) {
        let (a, b) = (self.px(x0), self.px(x1));
        let (c, d) = (self.py(y0), self.py(y1));
        let _ = writeln!(
            self.body,
            r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            a.min(b),
            c.min(d),
            (b - a).abs().max(1.0),
            (d - c).abs().max(1.0),
            escape(title)
        );
    }

    /// The plot as an `<svg>` element.
    pub fn finish(self) -> String {
        let (w, h) = (self.width, self.height);
        let mut svg = format!(r#"<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#);
        svg.push('\n');
        let (left, right, top, bottom) = (self.left, w - MARGIN.1, MARGIN.2, h - MARGIN.3);
        let _ = writeln!(
            svg,
            r#"<rect class="frame" x="{left}" y="{top}" width="{}" height="{}"/>"#,
            right - left,
            bottom - top
        );
        for t in self.x.ticks() {
            let x = self.px(t);
            let _ = writeln!(
                svg,
                r#"<line class="grid" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                short(t)
            );
        }
        let y_ticks: Vec<(f64, String)> = match &self.categories {
            Some(labels) => labels.iter().enumerate().map(|(i, l)| (i as f64, l.clone())).collect(),
            None => self.y.ticks().into_iter().map(|t| (t, short(t))).collect(),
        };
        for (t, label) in y_ticks {
            let y = self.py(t);
            let _ = writeln!(
                svg,
                r#"<line class="grid" x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + 4.0,
                escape(&label)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            h - 6.0,
            escape(&self.x.label)
        );
        // Category names say what the rows are.
        if self.categories.is_none() {
            let _ = writeln!(
                svg,
                r#"<text class="axis" transform="rotate(-90)" x="{:.1}" y="14" text-anchor="middle">{}</text>"#,
                -(top + bottom) / 2.0,
                escape(&self.y.label)
            );
        }
        svg.push_str(&self.body);
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let axis = Axis { label: "x".into(), min: 0.13, max: 2.9, log: false };
        assert_eq!(axis.ticks(), vec![0.5, 1.0, 1.5, 2.0, 2.5]);
        let log = Axis { label: "p".into(), min: 800.0, max: 2e5, log: true };
        assert_eq!(log.ticks(), vec![1e3, 1e4, 1e5]);
        assert_eq!(short(12_000.0), "12K");
        assert_eq!(short(0.25), "0.25");
    }

    #[test]
    fn marks_carry_their_class_and_escaped_tooltip() {
        let mut plot = Plot::new(300.0, 200.0, Axis::fit("x", [0.0, 1.0], false), Axis::fit("y", [0.0, 1.0], false));
        plot.point(0.5, 0.5, "circle", "trial", "a<b & c");
        let svg = plot.finish();
        assert!(svg.contains(r#"<circle class="trial""#) && svg.contains("<title>a&lt;b &amp; c</title>"), "{svg}");
    }
}
