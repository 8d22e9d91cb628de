-- Staging: every input typed, deduplicated and with currency codes normalised.

CREATE MODEL staging.bank_transactions WITH (
    schedule = 'on change', unique_key = 'transaction_id', max_staleness = '5 minutes',
    description = 'The bank''s transactions that are not reversed, typed like the other inputs. Keyed by the bank''s primary key, so updates and deletes in PostgreSQL reach it as a merge of the changed keys, and the models below follow its changes instead of rereading the bank') AS
SELECT transaction_id,
       CAST(account_id AS INT) AS account_id,
       CAST(counterparty_id AS INT) AS counterparty_id,
       CAST(gl_code AS INT) AS gl_code,
       CAST(booked_at AS TIMESTAMPTZ) AS booked_at,
       CAST(value_date AS DATE) AS value_date,
       CAST(amount AS NUMERIC(18,2)) AS amount,
       upper(trim(currency)) AS currency,
       description,
       status
FROM raw.bank_transactions
WHERE status <> 'reversed';

CREATE MODEL staging.transactions WITH (
    schedule = 'on change', max_staleness = '5 minutes',
    description = 'Every transaction once (history, bank and card payments): typed, exact duplicates removed, currency codes upper-case, unparseable history rows left out, reversed bank transactions excluded') AS
SELECT DISTINCT * FROM (
    SELECT transaction_id,
           CAST(account_id AS INT) AS account_id,
           CAST(counterparty_id AS INT) AS counterparty_id,
           CAST(gl_code AS INT) AS gl_code,
           CAST(booked_at AS TIMESTAMPTZ) AS booked_at,
           CAST(value_date AS DATE) AS value_date,
           TRY_CAST(amount AS NUMERIC(18,2)) AS amount,
           upper(trim(currency)) AS currency,
           description,
           'booked' AS status,
           'history' AS source
    FROM raw.transaction_history
    WHERE TRY_CAST(amount AS NUMERIC(18,2)) IS NOT NULL
    UNION ALL
    SELECT transaction_id, account_id, counterparty_id, gl_code, booked_at, value_date,
           amount, currency, description, status, 'bank'
    FROM staging.bank_transactions
    UNION ALL
    SELECT payment_id,
           CAST(account_id AS INT),
           CAST(NULL AS INT),
           5700,
           CAST(authorized_at AS TIMESTAMPTZ),
           CAST(authorized_at AS DATE),
           CAST(amount AS NUMERIC(18,2)),
           upper(trim(currency)),
           merchant,
           'booked',
           'card'
    FROM raw.card_payments
) AS all_transactions;

COMMENT ON COLUMN staging.transactions.status IS 'booked, or pending until the bank books it';
COMMENT ON COLUMN staging.transactions.source IS 'history (CSV export), bank (PostgreSQL) or card (stream)';

CREATE MODEL staging.fx_rates WITH (
    schedule = 'on change',
    description = 'One rate to USD per currency and day: the history, then the last API snapshot of each later day') AS
SELECT CAST(day AS DATE) AS day, currency, rate_to_usd
FROM raw.fx_history
UNION ALL
SELECT day, currency, rate_to_usd
FROM (
    SELECT CAST(_loaded_at AS DATE) AS day, currency, rate_to_usd,
           row_number() OVER (PARTITION BY currency, CAST(_loaded_at AS DATE)
                              ORDER BY _loaded_at DESC) AS newest
    FROM raw.fx_latest
) AS snapshots
WHERE newest = 1 AND day > (SELECT max(CAST(day AS DATE)) FROM raw.fx_history);

CREATE MODEL staging.counterparties WITH (
    description = 'Counterparties with an unknown country spelled out') AS
SELECT CAST(counterparty_id AS INT) AS counterparty_id,
       name,
       coalesce(country, 'unknown') AS country,
       kind
FROM raw.counterparties;
