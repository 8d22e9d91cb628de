-- The example financial project, in layers (apply in file order: `tributary demo` does, and
-- `psql -v ON_ERROR_STOP=1 -f` works file by file):
--   raw           inputs as they arrive: seed files, the bank's PostgreSQL database, the FX
--                 rates API and the card-payment stream
--   staging       typed, deduplicated, currencies normalised
--   intermediate  transactions in USD with their account and ledger category; daily balances
--   marts         the dimensional model, KPIs, deviation alerts and the cash-flow forecast
--   reports       regulatory reports, exported as CSV
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS intermediate;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS reports;
