//! The one table printer of Ferry's command lines — `ferry`'s calicoctl-like views, `ferry-lab`
//! and `ferry-bench` — on comfy-table, in the look of calicoctl's Go tabwriter output:
//! left-aligned columns three spaces apart, no borders, no trailing whitespace. Every table a
//! person reads in a terminal is built here, with [`new`] or [`render`], so they all look alike.
//!
//! What lives here: text tables. What may not: anything else (Markdown tables written into docs
//! are their writers' own; no I/O: callers print the rendered text).
#![forbid(unsafe_code)]

use comfy_table::{presets, CellAlignment, ContentArrangement};
use std::fmt;

/// A table of text cells in `ferry`'s style. `Display` renders it: the header row (if any),
/// then one line per row, each ending in `\n`.
pub struct Table(comfy_table::Table);

/// A new table with these column headers (an empty slice: a table without a header row).
pub fn new(headers: &[&str]) -> Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if !headers.is_empty() {
        t.set_header(headers.to_vec());
    }
    let mut table = Table(t);
    table.style_columns();
    table
}

impl Table {
    /// Adds a row of cells.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.0
            .add_row(cells.into_iter().map(Into::into).collect::<Vec<String>>());
        self.style_columns();
        self
    }

    /// The rendered lines, without their trailing whitespace.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.0.lines().map(|l| l.trim_end().to_string())
    }

    /// Left-aligned, three spaces after every column but the last (rows may add columns, so
    /// this runs after each one).
    fn style_columns(&mut self) {
        let last = self.0.column_count().saturating_sub(1);
        for (i, c) in self.0.column_iter_mut().enumerate() {
            c.set_padding(if i == last { (0, 0) } else { (0, 3) });
            c.set_cell_alignment(CellAlignment::Left);
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// `rows` under `header` (no header line when `header` is empty), one line per row, each
/// ending in a newline: [`new`] and [`Table::row`] in one call.
pub fn render<H, R, C>(header: &[H], rows: R) -> String
where
    H: AsRef<str>,
    R: IntoIterator,
    R::Item: IntoIterator<Item = C>,
    C: ToString,
{
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
    let mut table = new(&header);
    for row in rows {
        table.row(row.into_iter().map(|c| c.to_string()));
    }
    table.to_string()
}

/// `text` (a rendered table) with `prefix` in front of every line: a table nested under a
/// heading.
pub fn indent(prefix: &str, text: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_rows_are_three_spaces_apart_without_trailing_space() {
        let out = render(
            &["NAME", "STATE", "NOTE"],
            [vec!["a", "up", ""], vec!["longer", "down", "x"]],
        );
        assert_eq!(
            out,
            "NAME     STATE   NOTE\n\
             a        up\n\
             longer   down    x\n"
        );
        assert_eq!(render::<&str, _, _>(&[], [["k", "v"]]), "k   v\n");
        assert_eq!(indent("  ", "a   b\nc\n"), "  a   b\n  c\n");
    }

    #[test]
    fn columns_are_left_aligned_three_spaces_apart_without_trailing_spaces() {
        let mut t = new(&["NAME", "CIDR", "SELECTOR"]);
        t.row(["default-ipv4-ippool", "172.16.0.0/16", "all()"]);
        t.row(["b", "10.0.0.0/8", ""]);
        assert_eq!(
            t.to_string(),
            "NAME                  CIDR            SELECTOR\n\
             default-ipv4-ippool   172.16.0.0/16   all()\n\
             b                     10.0.0.0/8\n"
        );
    }

    #[test]
    fn a_table_without_headers_has_only_its_rows() {
        let mut t = new(&[]);
        t.row(["10.0.0.0/8", "x"]);
        t.row(["0.0.0.0/0", "default"]);
        assert_eq!(t.to_string(), "10.0.0.0/8   x\n0.0.0.0/0    default\n");
        assert_eq!(new(&[]).to_string(), "");
    }
}
