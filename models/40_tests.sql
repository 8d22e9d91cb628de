-- Data tests: each runs after every refresh of the model it checks, before the new version is
-- published; an error test that fails keeps the previous version served (write-audit-publish).
CREATE TEST stg_transaction_id_unique ON staging.transactions EXPECT UNIQUE (transaction_id);

CREATE TEST stg_transactions_complete ON staging.transactions
    EXPECT NOT NULL (transaction_id, account_id, booked_on, amount_usd);

CREATE TEST stg_currency_known ON staging.transactions EXPECT currency IN ('EUR', 'GBP', 'USD');

CREATE TEST stg_account_exists ON staging.transactions
    EXPECT account_id REFERENCES raw.accounts (account_id);

CREATE TEST cash_flow_one_row_per_unit_and_day ON marts.daily_cash_flow
    EXPECT UNIQUE (business_unit, day);

CREATE TEST cash_flow_has_rows ON marts.daily_cash_flow EXPECT ROW COUNT BETWEEN 1 AND 10000000;

CREATE TEST balances_one_row_per_account ON marts.account_balances EXPECT UNIQUE (account_id);

-- A warning, not a gate: accounts whose USD balance is negative deserve a look.
CREATE TEST balances_not_overdrawn WITH (severity = 'warn') AS
    SELECT account_id, name, balance_usd FROM marts.account_balances WHERE balance_usd < 0;
