-- Data tests: each runs after every refresh of the model it checks, before the new version is
-- published; an error test that fails keeps the previous version served (write-audit-publish).

CREATE TEST stg_bank_transaction_id_unique ON staging.bank_transactions
    EXPECT UNIQUE (transaction_id);

CREATE TEST stg_bank_status_known ON staging.bank_transactions
    EXPECT status IN ('booked', 'pending');

CREATE TEST stg_transaction_id_unique ON staging.transactions EXPECT UNIQUE (transaction_id);

CREATE TEST stg_transactions_complete ON staging.transactions
    EXPECT NOT NULL (transaction_id, account_id, booked_at, amount, currency);

CREATE TEST stg_currency_known ON staging.transactions
    EXPECT currency IN ('USD', 'EUR', 'GBP', 'CHF', 'JPY');

CREATE TEST stg_status_known ON staging.transactions EXPECT status IN ('booked', 'pending');

CREATE TEST stg_account_exists ON staging.transactions
    EXPECT account_id REFERENCES raw.accounts (account_id);

CREATE TEST fx_one_rate_per_day ON intermediate.fx_daily EXPECT UNIQUE (currency, day);

CREATE TEST usd_amount_known ON intermediate.transactions_usd WITH (severity = 'warn')
    EXPECT NOT NULL (amount_usd);

CREATE TEST fct_transaction_id_unique ON marts.fct_transactions EXPECT UNIQUE (transaction_id);

CREATE TEST fct_counterparty_exists ON marts.fct_transactions
    EXPECT counterparty_id REFERENCES marts.dim_counterparty (counterparty_id);

CREATE TEST dim_date_one_row_per_day ON marts.dim_date EXPECT UNIQUE (day);

CREATE TEST dim_account_unique ON marts.dim_account EXPECT UNIQUE (account_id);

CREATE TEST kpi_daily_one_row_per_unit_and_day ON marts.kpi_daily EXPECT UNIQUE (business_unit, day);

CREATE TEST kpi_daily_fresh ON marts.kpi_daily WITH (severity = 'warn')
    EXPECT FRESHNESS (day) WITHIN '3 days';

CREATE TEST kpi_monthly_one_row_per_unit_and_month ON marts.kpi_monthly
    EXPECT UNIQUE (business_unit, month);

CREATE TEST forecast_covers_90_days ON marts.cash_flow_forecast
    EXPECT ROW COUNT BETWEEN 90 AND 1000;

CREATE TEST forecast_scenarios_ordered ON marts.cash_flow_forecast
    EXPECT pessimistic <= base AND base <= optimistic;

CREATE TEST large_transactions_are_large ON reports.large_transactions
    EXPECT abs(amount_usd) >= 10000;

CREATE TEST balances_one_row_per_account_and_month ON reports.monthly_balances
    EXPECT UNIQUE (account_id, month);

-- Warnings, not gates: rows of the history export that could not be read, and accounts
-- whose USD balance went negative.
CREATE TEST history_unreadable_rows WITH (severity = 'warn') AS
    SELECT transaction_id, amount FROM raw.transaction_history
    WHERE TRY_CAST(amount AS NUMERIC(18,2)) IS NULL;

CREATE TEST balances_not_overdrawn WITH (severity = 'warn') AS
    SELECT month, account_id, account_name, balance_usd FROM reports.monthly_balances
    WHERE balance_usd < 0;

-- Keys of the remaining models.
CREATE TEST stg_fx_one_rate_per_day ON staging.fx_rates EXPECT UNIQUE (currency, day);

CREATE TEST stg_counterparty_id_unique ON staging.counterparties EXPECT UNIQUE (counterparty_id);

CREATE TEST movements_one_row_per_account_and_day ON intermediate.account_daily_movements
    EXPECT UNIQUE (account_id, day);

CREATE TEST daily_spend_one_row_per_day_and_category ON marts.daily_spend
    EXPECT UNIQUE (day, category);

CREATE TEST balances_one_row_per_account_and_day ON intermediate.account_daily_balances
    EXPECT UNIQUE (account_id, day);

CREATE TEST dim_counterparty_unique ON marts.dim_counterparty EXPECT UNIQUE (counterparty_id);

CREATE TEST deviations_one_row_per_category_and_day ON marts.spend_deviations
    EXPECT UNIQUE (category, day);
