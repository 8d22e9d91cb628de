-- Cash-flow forecast: the next 90 days per business unit, from a linear trend fitted on the
-- last year of daily net cash flow plus a weekly seasonal effect (the mean residual of each
-- day of the week), with scenarios around it.

CREATE MODEL marts.cash_flow_forecast WITH (
    schedule = 'cron 0 6 * * *',
    description = 'Daily net cash flow forecast for 90 days per business unit: base = trend + weekday effect; optimistic and pessimistic = base plus or minus 1.28 residual standard deviations (an 80% band)') AS
WITH history AS (
    SELECT k.business_unit, k.day,
           CAST(k.net_cash_flow AS DOUBLE PRECISION) AS y,
           (date_part('epoch', CAST(k.day AS TIMESTAMP)) - date_part('epoch', CAST(l.last_day AS TIMESTAMP))) / 86400 AS x
    FROM marts.kpi_daily k
    CROSS JOIN (SELECT max(day) AS last_day FROM marts.kpi_daily) l
    WHERE k.day > l.last_day - INTERVAL '365 days'
),
trend AS (
    SELECT business_unit, regr_slope(y, x) AS slope, regr_intercept(y, x) AS intercept
    FROM history
    GROUP BY business_unit
),
weekday AS (
    SELECT h.business_unit, date_part('dow', h.day) AS dow,
           avg(h.y - (t.intercept + t.slope * h.x)) AS effect
    FROM history h JOIN trend t ON t.business_unit = h.business_unit
    GROUP BY h.business_unit, date_part('dow', h.day)
),
spread AS (
    SELECT h.business_unit, stddev_samp(h.y - (t.intercept + t.slope * h.x) - w.effect) AS sd
    FROM history h
    JOIN trend t ON t.business_unit = h.business_unit
    JOIN weekday w ON w.business_unit = h.business_unit AND w.dow = date_part('dow', h.day)
    GROUP BY h.business_unit
),
future AS (
    SELECT CAST(d AS DATE) AS day, last_day
    FROM (
        SELECT unnest(generate_series(last_day + INTERVAL '1 day', last_day + INTERVAL '90 days',
                                      INTERVAL '1 day')) AS d,
               last_day
        FROM (SELECT max(day) AS last_day FROM marts.kpi_daily) AS l
    ) AS g
)
SELECT t.business_unit,
       f.day,
       CAST((date_part('epoch', CAST(f.day AS TIMESTAMP)) - date_part('epoch', CAST(f.last_day AS TIMESTAMP))) / 86400 AS INT) AS horizon_days,
       t.intercept + t.slope * ((date_part('epoch', CAST(f.day AS TIMESTAMP)) - date_part('epoch', CAST(f.last_day AS TIMESTAMP))) / 86400) + w.effect AS base,
       t.intercept + t.slope * ((date_part('epoch', CAST(f.day AS TIMESTAMP)) - date_part('epoch', CAST(f.last_day AS TIMESTAMP))) / 86400) + w.effect + 1.2816 * s.sd AS optimistic,
       t.intercept + t.slope * ((date_part('epoch', CAST(f.day AS TIMESTAMP)) - date_part('epoch', CAST(f.last_day AS TIMESTAMP))) / 86400) + w.effect - 1.2816 * s.sd AS pessimistic
FROM trend t
CROSS JOIN future f
JOIN weekday w ON w.business_unit = t.business_unit AND w.dow = date_part('dow', f.day)
JOIN spread s ON s.business_unit = t.business_unit;

COMMENT ON COLUMN marts.cash_flow_forecast.horizon_days IS 'days after the last day with data';
