-- The transactional bank the example federates (created by `tributary demo`).
CREATE SCHEMA IF NOT EXISTS bank;
CREATE TABLE IF NOT EXISTS bank.accounts (
    account_id integer PRIMARY KEY,
    iban text NOT NULL,
    business_unit text NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS bank.transactions (
    transaction_id bigint PRIMARY KEY,
    account_id integer NOT NULL REFERENCES bank.accounts,
    counterparty_id integer,
    gl_code integer NOT NULL,
    booked_at timestamptz NOT NULL,
    value_date date NOT NULL,
    amount numeric(18, 2) NOT NULL,
    currency text NOT NULL,
    description text,
    status text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_updated_at ON bank.transactions (updated_at);
-- Which seed files the tables were loaded from (see bank.rs).
CREATE TABLE IF NOT EXISTS bank.seed (fingerprint text NOT NULL);
