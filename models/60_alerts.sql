-- Deviation alerts: a day whose spend in an expense category is more than 3 standard
-- deviations away from that category's trailing 30-day mean.

-- The daily spend is a model of its own, folded from the changed transactions; the trailing
-- statistics over it are window functions, refreshed in full over one row per category and day.
CREATE MODEL marts.daily_spend WITH (
    schedule = 'on change',
    description = 'Expense per category and day with expense bookings, in USD (a refund lowers it)') AS
SELECT day, category, count(*) AS transactions, sum(-amount_usd) AS spend
FROM marts.fct_transactions
WHERE gl_type = 'expense'
GROUP BY day, category;

CREATE MODEL marts.spend_deviations WITH (
    schedule = 'every 5 minutes',
    description = 'Daily spend per expense category (zero on days without any) against its trailing 30-day mean and standard deviation; is_alert when the z-score exceeds 3 in either direction') AS
SELECT category, day, spend, trailing_mean, trailing_stddev,
       CASE WHEN trailing_stddev > 0 THEN (spend - trailing_mean) / trailing_stddev END AS z_score,
       coalesce(abs(spend - trailing_mean) > 3 * trailing_stddev AND trailing_stddev > 0, false) AS is_alert
FROM (
    SELECT category, day, spend,
           avg(spend) OVER (PARTITION BY category ORDER BY day
                            ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING) AS trailing_mean,
           stddev_samp(spend) OVER (PARTITION BY category ORDER BY day
                                    ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING) AS trailing_stddev,
           count(*) OVER (PARTITION BY category ORDER BY day
                          ROWS BETWEEN 30 PRECEDING AND 1 PRECEDING) AS trailing_days
    FROM (
        SELECT c.category, d.day, CAST(coalesce(s.spend, 0) AS DOUBLE PRECISION) AS spend
        FROM marts.dim_date d
        CROSS JOIN (SELECT DISTINCT category FROM raw.chart_of_accounts WHERE gl_type = 'expense') c
        LEFT JOIN marts.daily_spend s ON s.day = d.day AND s.category = c.category
        WHERE d.day <= (SELECT max(day) FROM marts.fct_transactions)
    ) AS daily
) AS stats
WHERE trailing_days = 30;

CREATE VIEW marts.spend_alerts AS
SELECT category, day, spend, trailing_mean, z_score
FROM marts.spend_deviations
WHERE is_alert;

COMMENT ON VIEW marts.spend_alerts IS 'Only the days that deviate: what the dashboard''s alert table and annotations show';
