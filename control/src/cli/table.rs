//! The one table printer of `ferry`'s views, on comfy-table, in the look of calicoctl's Go
//! tabwriter output: left-aligned columns three spaces apart, no borders, no trailing
//! whitespace. Every view that prints a table builds it with [`new`], so they all look alike.

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

#[cfg(test)]
mod tests {
    use super::*;

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
