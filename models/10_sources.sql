-- Raw inputs read in place. Reference data and history ship in seeds/ (written by
-- `tributary generate`); FX rates come from an HTTP API and card payments from a landing
-- folder, both provided by `tributary demo`.
CREATE SOURCE raw.chart_of_accounts FROM FILES 'seeds/chart_of_accounts.csv' FORMAT CSV
    WITH (description = 'Ledger accounts (GL codes): revenue or expense, and their category');

CREATE SOURCE raw.accounts FROM FILES 'seeds/accounts.csv' FORMAT CSV
    WITH (description = 'Bank accounts with business unit, currency and kind');

CREATE SOURCE raw.counterparties FROM FILES 'seeds/counterparties.csv' FORMAT CSV
    WITH (description = 'Customers, suppliers and employees the company pays or is paid by');

CREATE SOURCE raw.fx_history FROM FILES 'seeds/fx_rates.json' FORMAT JSON
    WITH (description = 'Three years of daily conversion rates to USD');

CREATE SOURCE raw.market_prices FROM FILES 'seeds/market_prices.csv' FORMAT CSV
    WITH (description = 'Three years of daily closing prices of the listed peers');

-- Amounts and dates are text here: the history has the odd unparseable value, which staging
-- filters out (and a warning test counts) instead of failing the whole load.
CREATE SOURCE raw.transaction_history (
    transaction_id BIGINT NOT NULL,
    account_id INT NOT NULL,
    counterparty_id INT,
    gl_code INT NOT NULL,
    booked_at TEXT NOT NULL,
    value_date TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    description TEXT
) FROM FILES 'seeds/transactions/*.csv' FORMAT CSV
    WITH (description = 'Closed-books transaction history, one CSV file per month, as exported by the old core banking system');

CREATE SOURCE raw.fx_latest FROM HTTP 'http://127.0.0.1:6546/v1/rates' FORMAT JSON
    WITH (records = '$.rates[*]', poll = '1 minute', timeout = '5 seconds', retries = 2,
          max_staleness = '10 minutes',
          description = 'Latest conversion rates to USD from the FX rates API, one snapshot per poll');

CREATE SOURCE raw.card_payments (
    payment_id BIGINT NOT NULL,
    account_id INT NOT NULL,
    merchant TEXT,
    amount NUMERIC(18,2) NOT NULL,
    currency TEXT NOT NULL,
    authorized_at TIMESTAMPTZ NOT NULL
) FROM FILES 'landing/card_payments/' FORMAT CSV
    WITH (mode = 'append', poll = '5 seconds', max_staleness = '2 minutes',
          description = 'Card payments as the card network delivers them: files landing in a folder, late and duplicated at times');
