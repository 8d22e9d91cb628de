-- Regulatory reports. Each month's report is reproducible later: the models are Delta tables,
-- so `SELECT ... FROM reports.x TIMESTAMP AS OF '<month end>'` returns what was reported.

CREATE MODEL reports.large_transactions WITH (
    schedule = 'on change', unique_key = 'transaction_id',
    description = 'Large-transaction report: every booked transaction of 10,000 USD or more, with account and counterparty, by month') AS
SELECT CAST(date_trunc('month', f.day) AS DATE) AS month,
       f.transaction_id, f.day, f.account_id, a.name AS account_name, f.business_unit,
       f.counterparty_id, c.name AS counterparty_name, c.country,
       f.amount, f.currency, f.amount_usd
FROM marts.fct_transactions f
JOIN marts.dim_account a ON a.account_id = f.account_id
LEFT JOIN marts.dim_counterparty c ON c.counterparty_id = f.counterparty_id
WHERE f.status = 'booked' AND abs(f.amount_usd) >= 10000;

CREATE MODEL reports.monthly_balances WITH (
    schedule = 'cron 0 6 * * *',
    description = 'Month-end balance report: each account''s balance on the last day with bookings of each month, in its currency and in USD') AS
SELECT month, account_id, name AS account_name, business_unit, currency, balance, balance_usd
FROM (
    SELECT CAST(date_trunc('month', b.day) AS DATE) AS month, b.account_id, a.name,
           a.business_unit, a.currency, b.balance, b.balance_usd,
           row_number() OVER (PARTITION BY b.account_id, date_trunc('month', b.day)
                              ORDER BY b.day DESC) AS newest
    FROM intermediate.account_daily_balances b
    JOIN marts.dim_account a ON a.account_id = b.account_id
) AS month_ends
WHERE newest = 1;

-- The filing: on the 1st of each month at 06:00 UTC, last month's reports are written as CSV
-- files, read as they stood at that moment (time travel). `RUN JOB name AS OF '<moment>'`
-- re-files a past month exactly as it was filed; `tributary.job_runs` keeps every run.
CREATE JOB file_large_transactions WITH (
    schedule = 'cron 0 6 1 * *', retries = 2, retry_delay = '5 minutes', timeout = '10 minutes',
    description = 'Files last month''s large-transaction report as reports/large_transactions_YYYY-MM.csv') AS
COPY (SELECT month, transaction_id, day, account_id, account_name, business_unit,
             counterparty_id, counterparty_name, country, amount, currency, amount_usd
      FROM reports.large_transactions TIMESTAMP AS OF '{{run_time}}'
      WHERE month = DATE '{{previous_month_start}}'
      ORDER BY day, transaction_id)
TO 'reports/large_transactions_{{previous_month}}.csv' WITH (FORMAT csv, HEADER true);

CREATE JOB file_monthly_balances WITH (
    schedule = 'cron 0 6 1 * *', retries = 2, retry_delay = '5 minutes', timeout = '10 minutes',
    description = 'Files last month''s month-end balance report as reports/monthly_balances_YYYY-MM.csv') AS
COPY (SELECT month, account_id, account_name, business_unit, currency, balance, balance_usd
      FROM reports.monthly_balances TIMESTAMP AS OF '{{run_time}}'
      WHERE month = DATE '{{previous_month_start}}'
      ORDER BY account_id)
TO 'reports/monthly_balances_{{previous_month}}.csv' WITH (FORMAT csv, HEADER true);
