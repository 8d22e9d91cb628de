-- Marts: daily cash flow per business unit, and account balances.
CREATE MODEL marts.daily_cash_flow WITH (description = 'Revenue, expenses and net cash flow per business unit and day (USD)') AS
SELECT a.business_unit,
       t.booked_on AS day,
       sum(CASE WHEN t.amount_usd > 0 THEN t.amount_usd ELSE 0 END) AS revenue,
       sum(CASE WHEN t.amount_usd < 0 THEN -t.amount_usd ELSE 0 END) AS expenses,
       sum(t.amount_usd) AS net_cash_flow,
       count(*) AS transactions
FROM staging.transactions t
JOIN raw.accounts a ON a.account_id = t.account_id
GROUP BY a.business_unit, t.booked_on;

CREATE MODEL marts.account_balances WITH (description = 'Balance per account in its own currency and in USD') AS
SELECT a.account_id, a.name, a.currency,
       sum(t.amount) AS balance,
       sum(t.amount_usd) AS balance_usd,
       max(t.booked_on) AS last_booked_on
FROM raw.accounts a
JOIN staging.transactions t ON t.account_id = a.account_id
GROUP BY a.account_id, a.name, a.currency;
