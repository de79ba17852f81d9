//! CLI output: aligned tables for people, JSON or CSV for scripts.

use serde_json::Value as Json;

/// How the CLI prints results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

/// Rows with named columns, printed in the chosen format.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
    /// The same data as JSON objects, for `--output json`.
    pub json: Vec<Json>,
}

impl Rows {
    pub fn new(columns: Vec<&'static str>) -> Self {
        Self {
            columns,
            ..Default::default()
        }
    }

    pub fn push(&mut self, row: Vec<String>, json: Json) {
        self.rows.push(row);
        self.json.push(json);
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(&self.json).unwrap_or_default() + "\n",
            Format::Csv => {
                let mut out = String::new();
                out.push_str(
                    &self
                        .columns
                        .iter()
                        .map(|c| csv_field(c))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
                for r in &self.rows {
                    out.push_str(&r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
                    out.push('\n');
                }
                out
            }
            Format::Table => {
                let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
                for r in &self.rows {
                    for (i, c) in r.iter().enumerate() {
                        if let Some(w) = widths.get_mut(i) {
                            *w = (*w).max(c.chars().count());
                        }
                    }
                }
                let line = |cells: Vec<&str>| {
                    let mut s = String::new();
                    for (i, c) in cells.iter().enumerate() {
                        if i > 0 {
                            s.push_str("  ");
                        }
                        s.push_str(c);
                        if i + 1 < cells.len() {
                            s.push_str(&" ".repeat(widths[i].saturating_sub(c.chars().count())));
                        }
                    }
                    s.push('\n');
                    s
                };
                let mut out = line(self.columns.to_vec());
                for r in &self.rows {
                    out.push_str(&line(r.iter().map(String::as_str).collect()));
                }
                out
            }
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut r = Rows::new(vec!["id", "labels"]);
        r.push(
            vec!["d1".into(), "a=1,b=2".into()],
            serde_json::json!({"id": "d1"}),
        );
        assert_eq!(r.render(Format::Table), "id  labels\nd1  a=1,b=2\n");
        assert_eq!(r.render(Format::Csv), "id,labels\nd1,\"a=1,b=2\"\n");
        assert!(r.render(Format::Json).contains("\"id\": \"d1\""));
    }
}
