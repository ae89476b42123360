//! `--format parquet`: a document of OCSF 1.1.0 Security Findings
//! ([`super::ocsf::security_finding`], one record per row) as one Apache
//! Parquet file, the object Amazon Security Lake takes from a custom
//! source: zstd-compressed, data pages of at most 1 MB, records sorted by
//! `time`, one OCSF class per file.
//!
//! The file is the whole stream: rows are held until [`Sink::close`],
//! then sorted, turned into Arrow columns against [`schema`] (arrow-json's
//! decoder, strict: a record with a field the schema lacks is an error,
//! never a silent drop) and written. With no rows it is a valid file of
//! zero records (a claim, see `deliver::s3`). Values are written as they
//! are: Parquet holds data, not terminal text.

use std::io::{self, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::ReaderBuilder;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde_json::Value;

use super::ocsf::{Ocsf, security_finding};
use super::{Row, Sink};

/// The most a data page (or a dictionary page) holds before a new one
/// begins, less a value's worth: the writer checks after every value, and
/// no value is longer than a CloudWatch event (256 KiB), so no page passes
/// 1 MiB.
const PAGE_BYTES: usize = 1024 * 1024 - 256 * 1024;

#[derive(Debug, Clone)]
pub struct Parquet {
    ocsf: Ocsf,
    /// (time, record) of every row so far.
    records: Vec<(i64, Value)>,
}

impl Parquet {
    pub fn new(run_ms: i64) -> Parquet {
        Parquet {
            ocsf: Ocsf::new(run_ms),
            records: Vec::new(),
        }
    }
}

impl Sink for Parquet {
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        self.ocsf.begin(columns, out)
    }

    fn row(&mut self, row: &Row<'_>, _out: &mut dyn Write) -> io::Result<()> {
        let record = security_finding(self.ocsf.finding(row));
        let time = record["time"].as_i64().unwrap_or(i64::MIN);
        self.records.push((time, record));
        Ok(())
    }

    /// A part's end writes nothing: the file is written whole at close.
    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, _columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        let mut records = std::mem::take(&mut self.records);
        // Stable: rows of one time keep the order the format gave them.
        records.sort_by_key(|(t, _)| *t);
        let records: Vec<Value> = records.into_iter().map(|(_, r)| r).collect();
        let bytes = file(&records).map_err(io::Error::other)?;
        out.write_all(&bytes)
    }
}

/// A Parquet file of `records` (OCSF 1.1.0 Security Findings as JSON).
pub fn file(records: &[Value]) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let schema = schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES)
        .set_write_batch_size(1)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(props))?;
    for chunk in records.chunks(1024) {
        writer.write(&batch(&schema, chunk)?)?;
    }
    Ok(writer.into_inner()?)
}

fn batch(
    schema: &SchemaRef,
    records: &[Value],
) -> Result<RecordBatch, Box<dyn std::error::Error + Send + Sync>> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema))
        .with_strict_mode(true)
        .build_decoder()?;
    decoder.serialize(records)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

fn long(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn object(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

fn list(name: &str, item: DataType) -> Field {
    Field::new_list(name, Field::new_list_field(item, true), true)
}

/// The records' schema: every attribute [`security_finding`] writes, in
/// OCSF's types (`integer_t` 32 bits; `long_t` and `timestamp_t`, ms since
/// the epoch, 64), and `unmapped` a map of text to text.
pub fn schema() -> SchemaRef {
    let strings = DataType::Utf8;
    let fields = vec![
        int("activity_id"),
        text("activity_name"),
        int("category_uid"),
        text("category_name"),
        int("class_uid"),
        text("class_name"),
        long("type_uid"),
        text("type_name"),
        int("severity_id"),
        text("severity"),
        int("state_id"),
        text("state"),
        long("time"),
        long("start_time"),
        long("end_time"),
        long("count"),
        text("message"),
        object(
            "finding",
            vec![
                text("uid"),
                text("title"),
                list("types", strings.clone()),
                text("desc"),
                long("first_seen_time"),
                long("last_seen_time"),
                object("remediation", vec![text("desc")]),
            ],
        ),
        object(
            "analytic",
            vec![
                text("uid"),
                text("name"),
                int("type_id"),
                text("type"),
                text("category"),
                text("version"),
            ],
        ),
        list("data_sources", strings.clone()),
        object(
            "api",
            vec![text("operation"), object("response", vec![int("code")])],
        ),
        object(
            "evidence",
            vec![
                object(
                    "actor",
                    vec![object(
                        "user",
                        vec![
                            text("name"),
                            text("uid"),
                            list("groups", DataType::Struct(Fields::from(vec![text("name")]))),
                        ],
                    )],
                ),
                object("src_endpoint", vec![text("ip")]),
                object(
                    "http_request",
                    vec![
                        text("user_agent"),
                        object("url", vec![text("path"), text("query_string")]),
                        text("http_method"),
                    ],
                ),
            ],
        ),
        list(
            "resources",
            DataType::Struct(Fields::from(vec![
                text("type"),
                text("name"),
                text("namespace"),
                text("region"),
                text("version"),
            ])),
        ),
        object(
            "cloud",
            vec![
                text("provider"),
                text("region"),
                object("account", vec![text("uid")]),
            ],
        ),
        object(
            "metadata",
            vec![
                text("version"),
                object(
                    "product",
                    vec![text("name"), text("vendor_name"), text("version")],
                ),
                text("log_name"),
                list("profiles", strings.clone()),
            ],
        ),
        Field::new_map(
            "unmapped",
            "key_value",
            Field::new("key", strings.clone(), false),
            text("value"),
            false,
            true,
        ),
    ];
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn no_records_is_a_valid_empty_file() {
        let bytes = file(&[]).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let r = SerializedFileReader::new(f).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 0);
    }

    #[test]
    fn a_field_the_schema_lacks_is_an_error_not_a_drop() {
        let ok = serde_json::json!({ "class_uid": 2001, "unmapped": { "a": "1" } });
        assert!(file(std::slice::from_ref(&ok)).is_ok());
        let extra = serde_json::json!({ "class_uid": 2001, "is_alert": true });
        assert!(file(&[extra]).is_err());
    }
}
