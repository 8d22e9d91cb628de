-- Staging: typed transactions converted to USD.
CREATE MODEL staging.transactions WITH (description = 'Transactions with amounts in USD') AS
SELECT t.transaction_id,
       t.account_id,
       t.booked_on,
       t.amount,
       t.currency,
       CAST(t.amount * CAST(fx.rate_to_usd AS NUMERIC(18,6)) AS NUMERIC(18,2)) AS amount_usd,
       t.counterparty
FROM raw.transactions t
JOIN raw.fx_rates fx ON fx.currency = t.currency;
