-- Marts: the dimensional model BI tools and dashboards read.

CREATE MODEL marts.dim_date WITH (
    schedule = 'on change',
    description = 'One row per calendar day the data covers, with the calendar attributes reports group by') AS
SELECT day,
       CAST(date_part('year', day) AS INT) AS year,
       CAST(date_part('quarter', day) AS INT) AS quarter,
       CAST(date_part('month', day) AS INT) AS month,
       CAST(date_trunc('month', day) AS DATE) AS month_start,
       CAST(date_part('week', day) AS INT) AS iso_week,
       CAST(date_part('dow', day) AS INT) AS day_of_week,
       date_part('dow', day) IN (0, 6) AS is_weekend
FROM (SELECT DISTINCT day FROM intermediate.fx_daily) AS days;

COMMENT ON COLUMN marts.dim_date.day_of_week IS '0 = Sunday, as PostgreSQL''s extract(dow)';

CREATE MODEL marts.dim_account WITH (
    schedule = 'on change',
    description = 'Bank accounts: business unit, currency and kind from the reference data, IBAN and status from the core banking system') AS
SELECT a.account_id, a.name, a.business_unit, a.currency, a.kind, a.opened_on,
       b.iban, coalesce(b.status, 'unknown') AS status
FROM raw.accounts a
LEFT JOIN raw.bank_accounts b ON b.account_id = a.account_id;

CREATE MODEL marts.dim_counterparty WITH (
    schedule = 'on change',
    description = 'Customers, suppliers and employees') AS
SELECT counterparty_id, name, country, kind FROM staging.counterparties;

CREATE MODEL marts.fct_transactions WITH (
    schedule = 'on change', max_staleness = '5 minutes', unique_key = 'transaction_id',
    description = 'One row per transaction, keyed to dim_date, dim_account and dim_counterparty; amounts signed (credits positive)') AS
SELECT transaction_id, day, booked_at, account_id, counterparty_id, gl_code, business_unit,
       gl_type, category, amount, currency, amount_usd, status, source
FROM intermediate.transactions_usd;
