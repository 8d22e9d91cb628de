-- Raw inputs: CSV and JSON history shipped in seeds/, and a table fed like a stream.
CREATE SOURCE raw.accounts FROM FILES 'seeds/accounts.csv' FORMAT CSV
    WITH (description = 'Chart of bank accounts with category and business unit');

CREATE SOURCE raw.transactions (
    transaction_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    booked_on DATE NOT NULL,
    amount NUMERIC(18,2) NOT NULL,
    currency TEXT NOT NULL,
    counterparty TEXT
) FROM FILES 'seeds/transactions.csv' FORMAT CSV
    WITH (description = 'Booked bank transactions, signed (credits positive)');

CREATE SOURCE raw.fx_rates FROM FILES 'seeds/fx_rates.json' FORMAT JSON
    WITH (description = 'Conversion rates to USD');

CREATE TABLE raw.card_events (
    event_id BIGINT NOT NULL,
    account_id BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    amount NUMERIC(18,2) NOT NULL,
    merchant TEXT
);
