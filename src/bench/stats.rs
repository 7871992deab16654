//! Percentiles over samples and the plain-text result table.

use serde::Serialize;

/// p50 / p99 / max (and count, mean) of a set of samples in one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles; an empty set gives all zeros.
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[r.clamp(1, sorted.len()) - 1]
        };
        Summary {
            count: sorted.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

/// Rows of (figure, value, target) printed as an aligned table.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<[String; 3]>,
}

impl Table {
    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>, target: &str) {
        self.rows
            .push([figure.into(), value.into(), target.to_owned()]);
    }

    pub fn render(&self) -> String {
        let head = ["figure", "measured", "target"];
        let mut widths = head.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 3]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    s.push_str(" | ");
                }
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut out = line(head);
        out.push_str(&line(
            widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
        ));
        for row in &self.rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
        out
    }
}

/// Milliseconds with sensible precision.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

pub fn mib(kib: f64) -> String {
    format!("{:.2} MiB", kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        let one = Summary::of(&[7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Summary::of(&[]), Summary::default());
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::default();
        t.row("a", "1", "≤ 2");
        t.row("longer figure", "22", "");
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].starts_with("a             | 1 "));
        assert!(lines[3].starts_with("longer figure | 22"));
    }
}
