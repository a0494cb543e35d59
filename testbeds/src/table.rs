//! The one table printer of `ferry-lab` and `ferry-bench` (bench reuses it): comfy-table in the
//! look of calicoctl's tabwriter and of `ferry`'s own tables — no borders, left-aligned columns
//! three spaces apart, no trailing white space. Markdown tables written into docs are not
//! printed here.

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

/// `rows` under `header` (no header line when `header` is empty), one line per row, each
/// ending in a newline.
pub fn render<H, R, C>(header: &[H], rows: R) -> String
where
    H: AsRef<str>,
    R: IntoIterator,
    R::Item: IntoIterator<Item = C>,
    C: ToString,
{
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if !header.is_empty() {
        table.set_header(header.iter().map(AsRef::as_ref));
    }
    for row in rows {
        table.add_row(row.into_iter().map(|c| c.to_string()));
    }
    let columns = table.column_count();
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_cell_alignment(CellAlignment::Left);
        column.set_padding(if i + 1 == columns { (0, 0) } else { (0, 3) });
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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
    fn columns_are_three_spaces_apart_without_trailing_space() {
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
    }

    #[test]
    fn without_a_header_only_the_rows() {
        let out = render::<&str, _, _>(&[], [["k", "v"]]);
        assert_eq!(out, "k   v\n");
    }
}
