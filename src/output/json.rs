//! ndjson (one object per line) and json (one array). Keys are the fixed
//! column names in order; `count` is a number, every other value a string.

use std::io::{self, Write};

use super::{Row, Rows};

pub fn write_lines(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let header = rows.header();
    for row in rows.iter() {
        write_object(&header, rows, &row, out)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn write_array(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let header = rows.header();
    out.write_all(b"[")?;
    for (i, row) in rows.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        write_object(&header, rows, &row, out)?;
    }
    out.write_all(b"\n]\n")
}

fn write_object(
    header: &[&str],
    rows: &Rows<'_>,
    row: &Row,
    out: &mut dyn Write,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (i, (name, cell)) in header.iter().zip(rows.cells(row)).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, name)?;
        out.write_all(b":")?;
        if *name == "count" {
            out.write_all(cell.as_bytes())?;
        } else {
            serde_json::to_writer(&mut *out, &*cell)?;
        }
    }
    out.write_all(b"}")
}
