-- Intermediate: transactions in USD with their account and ledger category, and balances.

CREATE MODEL intermediate.fx_daily WITH (
    schedule = 'on change',
    description = 'A rate to USD for every currency and calendar day: a day without a published rate takes the last one published (for up to a week)') AS
SELECT currency, CAST(day AS DATE) AS day, rate_to_usd
FROM (
    SELECT currency, rate_to_usd,
           unnest(generate_series(valid_from, valid_to, INTERVAL '1 day')) AS day
    FROM (
        SELECT currency, rate_to_usd, day AS valid_from,
               coalesce(lead(day) OVER (PARTITION BY currency ORDER BY day) - INTERVAL '1 day',
                        day + INTERVAL '6 days') AS valid_to
        FROM staging.fx_rates
    ) AS spans
) AS days;

CREATE MODEL intermediate.transactions_usd WITH (
    schedule = 'on change', max_staleness = '5 minutes', unique_key = 'transaction_id',
    description = 'Transactions with their business unit, ledger type and category, and the amount in USD at the day''s rate') AS
SELECT t.transaction_id,
       CAST(t.booked_at AS DATE) AS day,
       t.booked_at,
       t.value_date,
       t.account_id,
       a.business_unit,
       a.kind AS account_kind,
       t.counterparty_id,
       t.gl_code,
       c.gl_type,
       c.category,
       t.amount,
       t.currency,
       CAST(t.amount * CAST(fx.rate_to_usd AS NUMERIC(18,6)) AS NUMERIC(18,2)) AS amount_usd,
       t.status,
       t.source
FROM staging.transactions t
JOIN raw.accounts a ON a.account_id = t.account_id
JOIN raw.chart_of_accounts c ON c.gl_code = t.gl_code
LEFT JOIN intermediate.fx_daily fx
       ON fx.currency = t.currency AND fx.day = CAST(t.booked_at AS DATE);

COMMENT ON COLUMN intermediate.transactions_usd.amount_usd IS 'amount converted at the rate of the booking day; null when no rate is known';

-- The daily movements are a model of their own: an aggregate over every transaction that an
-- incremental refresh folds from the changed transactions. The running balance over them is a
-- window function, refreshed in full, but over one row per account and day.
CREATE MODEL intermediate.account_daily_movements WITH (
    schedule = 'on change',
    description = 'Per account and day with bookings: the number of booked transactions and their net amount, in the account''s currency and in USD') AS
SELECT account_id, day, count(*) AS transactions,
       sum(amount) AS net_amount, sum(amount_usd) AS net_amount_usd
FROM intermediate.transactions_usd
WHERE status = 'booked'
GROUP BY account_id, day;

CREATE MODEL intermediate.account_daily_balances WITH (
    schedule = 'on change',
    description = 'Per account and day with bookings: the day''s net movement and the running balance, in the account''s currency and in USD') AS
SELECT account_id, day, transactions, net_amount, net_amount_usd,
       sum(net_amount) OVER (PARTITION BY account_id ORDER BY day
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS balance,
       sum(net_amount_usd) OVER (PARTITION BY account_id ORDER BY day
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS balance_usd
FROM intermediate.account_daily_movements;
