-- KPIs: revenue, expenses, net cash flow and margin by business unit, daily and monthly.

CREATE MODEL marts.kpi_daily WITH (
    schedule = 'on change', max_staleness = '5 minutes',
    description = 'Revenue, expenses, net cash flow and margin per business unit and day, in USD (pending transactions included)') AS
SELECT business_unit,
       day,
       sum(CASE WHEN gl_type = 'revenue' THEN amount_usd ELSE 0 END) AS revenue,
       sum(CASE WHEN gl_type = 'expense' THEN -amount_usd ELSE 0 END) AS expenses,
       sum(amount_usd) AS net_cash_flow,
       CASE WHEN sum(CASE WHEN gl_type = 'revenue' THEN amount_usd ELSE 0 END) > 0
            THEN CAST(sum(amount_usd) AS DOUBLE PRECISION)
                 / CAST(sum(CASE WHEN gl_type = 'revenue' THEN amount_usd ELSE 0 END) AS DOUBLE PRECISION)
       END AS margin,
       count(*) AS transactions
FROM marts.fct_transactions
GROUP BY business_unit, day;

COMMENT ON COLUMN marts.kpi_daily.margin IS 'net cash flow / revenue; null on days without revenue';

CREATE MODEL marts.kpi_monthly WITH (
    schedule = 'every 5 minutes',
    description = 'Revenue, expenses, net cash flow and margin per business unit and month, in USD') AS
SELECT business_unit,
       CAST(date_trunc('month', day) AS DATE) AS month,
       sum(revenue) AS revenue,
       sum(expenses) AS expenses,
       sum(net_cash_flow) AS net_cash_flow,
       CASE WHEN sum(revenue) > 0
            THEN CAST(sum(net_cash_flow) AS DOUBLE PRECISION) / CAST(sum(revenue) AS DOUBLE PRECISION)
       END AS margin,
       sum(transactions) AS transactions
FROM marts.kpi_daily
GROUP BY business_unit, CAST(date_trunc('month', day) AS DATE);
