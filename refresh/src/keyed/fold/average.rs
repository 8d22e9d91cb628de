//! AVG over decimals from a group's exact SUM and COUNT.
//!
//! DataFusion's AVG over `Decimal128(p, s)` returns `Decimal128(min(38, p + 4), min(38, s + 4))`:
//! it accumulates the exact sum of the values and the count of the non-null ones, then scales
//! the sum up to the result's scale and divides it by the count, truncating toward zero
//! (`DecimalAverager::avg`). The model's SUM column holds the same exact sum and its COUNT
//! column the same count, so the same arithmetic over them gives the same average.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, DecimalType, Int64Type, i256};
use std::sync::Arc;

use tributary_sql::error::{Error, Result};

/// `sum / count` per row as AVG computes it, typed `output` (NULL where the count is zero).
pub(super) fn decimal_avg(sum: &ArrayRef, count: &ArrayRef, output: &DataType) -> Result<ArrayRef> {
    let (DataType::Decimal128(_, sum_scale), DataType::Decimal128(precision, scale)) =
        (sum.data_type(), output)
    else {
        return Err(Error::Internal(format!(
            "avg from a sum of {} into {output}",
            sum.data_type()
        )));
    };
    let up = scale
        .checked_sub(*sum_scale)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or_else(|| Error::Internal("avg with a smaller scale than its sum".into()))?;
    let factor = 10i128
        .checked_pow(up)
        .map(i256::from_i128)
        .ok_or_else(|| Error::Internal("avg scale out of range".into()))?;
    let count = datafusion::arrow::compute::cast(count, &DataType::Int64)?;
    let (sums, counts) = (
        sum.as_primitive::<Decimal128Type>(),
        count.as_primitive::<Int64Type>(),
    );
    let mut averages = Decimal128Builder::with_capacity(sums.len());
    for row in 0..sums.len() {
        if sums.is_null(row) || counts.is_null(row) || counts.value(row) == 0 {
            averages.append_null();
            continue;
        }
        let average = i256::from_i128(sums.value(row))
            .checked_mul(factor)
            .and_then(|scaled| scaled.checked_div(i256::from_i128(counts.value(row).into())))
            .and_then(|a| a.to_i128())
            .filter(|a| Decimal128Type::validate_decimal_precision(*a, *precision, *scale).is_ok())
            .ok_or_else(|| Error::bad_input("arithmetic overflow in avg".to_string()))?;
        averages.append_value(average);
    }
    Ok(Arc::new(
        averages
            .finish()
            .with_precision_and_scale(*precision, *scale)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Int64Array};

    #[test]
    fn truncates_toward_zero_like_datafusion() {
        // 10.00 / 3 = 3.333333 and -10.00 / 3 = -3.333333 at scale 2 + 4.
        let sum: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(1000), Some(-1000), None, Some(5)])
                .with_precision_and_scale(12, 2)
                .unwrap(),
        );
        let count: ArrayRef = Arc::new(Int64Array::from(vec![3, 3, 0, 0]));
        let avg = decimal_avg(&sum, &count, &DataType::Decimal128(10, 6)).unwrap();
        let avg = avg.as_primitive::<Decimal128Type>();
        assert_eq!(avg.value(0), 3_333_333);
        assert_eq!(avg.value(1), -3_333_333);
        assert!(avg.is_null(2));
        assert!(avg.is_null(3));
    }
}
