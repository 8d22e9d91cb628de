-- The bank's tables read from the files `tributary demo` loads into PostgreSQL: what the
-- example uses in place of models/15_bank.sql when no PostgreSQL server is reachable.
-- Same names, columns and types as the federated sources.
CREATE SOURCE raw.bank_accounts (
    account_id INT NOT NULL,
    iban TEXT NOT NULL,
    business_unit TEXT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
) FROM FILES 'seeds/bank/accounts.csv' FORMAT CSV
    WITH (description = 'Accounts as the core banking system holds them (IBAN, status); offline copy');

CREATE SOURCE raw.bank_transactions (
    transaction_id BIGINT NOT NULL,
    account_id INT NOT NULL,
    counterparty_id INT,
    gl_code INT NOT NULL,
    booked_at TIMESTAMPTZ NOT NULL,
    value_date DATE NOT NULL,
    amount NUMERIC(18,2) NOT NULL,
    currency TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
) FROM FILES 'seeds/bank/transactions.csv' FORMAT CSV
    WITH (description = 'The last 90 days of transactions, pending until booked; offline copy');
