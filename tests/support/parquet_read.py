"""Reads Parquet files with pyarrow (an independent reader: Apache Arrow's
C++ implementation, from PyPI, pinned in tests/run) and prints, per file,
one JSON line: its row count, its column chunks' codecs, its key-value
metadata, its columns, and its records as JSON (a map column as an object;
absent values left out, as OCSF JSON has them).

Usage: python parquet_read.py FILE...
"""

import json
import sys

import pyarrow.parquet as pq


def plain(value):
    """A record's value as OCSF JSON has it: nulls dropped, maps (pyarrow's
    lists of key/value pairs) as objects."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {k: plain(v) for k, v in value}
        return [plain(v) for v in value]
    return value


def main(paths):
    for path in paths:
        f = pq.ParquetFile(path)
        meta = f.metadata
        codecs = set()
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                codecs.add(rg.column(c).compression)
        table = f.read()
        records = [plain(r) for r in table.to_pylist()]
        print(
            json.dumps(
                {
                    "rows": meta.num_rows,
                    "codecs": sorted(codecs),
                    "created_by": meta.created_by,
                    "key_value_metadata": {
                        k.decode(): v.decode()
                        for k, v in (meta.metadata or {}).items()
                        if k != b"ARROW:schema"
                    },
                    "columns": table.schema.names,
                    "records": records,
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
