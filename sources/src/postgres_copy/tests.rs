use super::*;
use column::numeric;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// A numeric in binary form from its parts.
fn pg_numeric(weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((digits.len() as i16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend(sign.to_be_bytes());
    out.extend(dscale.to_be_bytes());
    for d in digits {
        out.extend(d.to_be_bytes());
    }
    out
}

#[test]
fn numerics_land_on_the_decimal_scale() {
    // 1234.5678 = [1234, 5678], weight 0
    let v = pg_numeric(0, 0, 4, &[1234, 5678]);
    assert_eq!(numeric(&v, 18, 4), Ok(12_345_678));
    assert_eq!(numeric(&v, 18, 2), Ok(123_457)); // rounded half away from zero
    assert_eq!(numeric(&v, 18, 6), Ok(1_234_567_800));
    // -0.005 = [50] at weight -1 (0.0050), scale 3
    let v = pg_numeric(-1, 0x4000, 3, &[50]);
    assert_eq!(numeric(&v, 10, 2), Ok(-1));
    assert_eq!(numeric(&v, 10, 3), Ok(-5));
    // 20000 = [2] at weight 1
    let v = pg_numeric(1, 0, 0, &[2]);
    assert_eq!(numeric(&v, 10, 2), Ok(2_000_000));
    // zero has no digits
    assert_eq!(numeric(&pg_numeric(0, 0, 2, &[]), 5, 2), Ok(0));
    // too wide for the precision, NaN
    assert!(numeric(&pg_numeric(1, 0, 0, &[2]), 4, 0).is_err());
    assert!(numeric(&pg_numeric(0, 0xC000, 0, &[]), 4, 0).is_err());
}

/// A binary COPY stream of the given rows (each value already in binary form).
fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend(0i32.to_be_bytes());
    out.extend(0i32.to_be_bytes());
    for row in rows {
        out.extend((row.len() as i16).to_be_bytes());
        for value in row {
            match value {
                None => out.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend((v.len() as i32).to_be_bytes());
                    out.extend(v);
                }
            }
        }
    }
    out.extend((-1i16).to_be_bytes());
    out
}

#[test]
fn a_stream_decodes_whatever_its_pieces() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("note", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
    ]));
    let types = [Type::INT4, Type::TEXT, Type::DATE, Type::TIMESTAMPTZ];
    let rows: Vec<_> = (0..100)
        .map(|i: i32| {
            vec![
                Some(i.to_be_bytes().to_vec()),
                (i % 3 != 0).then(|| format!("note {i}").into_bytes()),
                Some(i.to_be_bytes().to_vec()),
                Some((i as i64 * 1_000_000).to_be_bytes().to_vec()),
            ]
        })
        .collect();
    let bytes = stream(&rows);
    for piece in [1, 7, 64, bytes.len()] {
        let mut decoder = CopyDecoder::new(&types, Arc::clone(&schema), "s.t".into()).unwrap();
        for chunk in bytes.chunks(piece) {
            decoder.push(chunk).unwrap();
        }
        decoder.finish().unwrap();
        let batch = decoder.batch().unwrap();
        assert_eq!(batch.num_rows(), 100, "pieces of {piece}");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&[batch.slice(1, 2)])
            .unwrap()
            .to_string();
        assert!(
            text.contains("| 1  | note 1 | 2000-01-02 | 2000-01-01T00:00:01Z |"),
            "{text}"
        );
        assert!(
            text.contains("| 2  | note 2 | 2000-01-03 | 2000-01-01T00:00:02Z |"),
            "{text}"
        );
        assert_eq!(batch.column(1).null_count(), 34);
    }
}

#[test]
fn unsupported_types_and_truncated_streams_are_refused() {
    let schema = Arc::new(Schema::new(vec![Field::new("u", DataType::Utf8, true)]));
    assert!(CopyDecoder::new(&[Type::UUID], Arc::clone(&schema), "s.t".into()).is_none());
    assert!(CopyDecoder::new(&[Type::JSONB], Arc::clone(&schema), "s.t".into()).is_none());
    let mut decoder = CopyDecoder::new(&[Type::TEXT], schema, "s.t".into()).unwrap();
    let bytes = stream(&[vec![Some(b"x".to_vec())]]);
    decoder.push(&bytes[..bytes.len() - 2]).unwrap();
    let e = decoder.finish().unwrap_err().to_string();
    assert!(
        e.contains("source \"s.t\"") && e.contains("ended early"),
        "{e}"
    );
}
