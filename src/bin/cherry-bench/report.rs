//! The report: one row per figure, the bridge beside its floor, the ratio
//! and the target, printed as a table or as JSON.

use serde::Serialize;

/// What a figure must reach.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// bridge / floor at most this.
    RatioAtMost(f64),
    /// bridge / floor at least this.
    RatioAtLeast(f64),
    /// The bridge figure itself at most this.
    AtMost(f64),
    /// Reported for context only.
    None,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub unit: &'static str,
    pub bridge: f64,
    pub floor: Option<f64>,
    pub target: Target,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let floor = self.floor?;
        (floor > 0.0).then(|| self.bridge / floor)
    }

    /// Whether the target is met; `None` when the row has no target.
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtMost(limit) => Some(self.ratio()? <= limit),
            Target::RatioAtLeast(limit) => Some(self.ratio()? >= limit),
            Target::AtMost(limit) => Some(self.bridge <= limit),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtMost(limit) => format!("<= {limit}x floor"),
            Target::RatioAtLeast(limit) => format!(">= {limit}x floor"),
            Target::AtMost(limit) => format!("<= {} {}", number(limit), self.unit),
            Target::None => String::new(),
        }
    }
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub fd_limit: u64,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut lines = vec![[
            "scenario".to_owned(),
            "figure".to_owned(),
            "bridge".to_owned(),
            "floor".to_owned(),
            "ratio".to_owned(),
            "target".to_owned(),
            "met".to_owned(),
        ]];
        for row in &self.rows {
            lines.push([
                row.scenario.to_owned(),
                format!("{} ({})", row.figure, row.unit),
                number(row.bridge),
                row.floor.map(number).unwrap_or_else(|| "-".to_owned()),
                row.ratio()
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".to_owned()),
                row.target_text(),
                match row.met() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => String::new(),
                },
            ]);
        }
        let mut widths = [0usize; 7];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        for (index, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| match column {
                    0 | 1 | 5 => format!("{cell:<width$}"),
                    _ => format!("{cell:>width$}"),
                })
                .collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
            if index == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

/// The `q` quantile (0..=1) of `values`, by nearest rank; 0 when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_takes_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut values, 0.5), 50.0);
        assert_eq!(quantile(&mut values, 0.99), 99.0);
        assert_eq!(quantile(&mut values, 1.0), 100.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
