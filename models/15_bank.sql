-- The transactional bank: a PostgreSQL database, federated (queries pushed down) and
-- change-tracked by its updated_at cursor. Without a reachable server, `tributary demo`
-- applies seeds/bank/offline.sql instead, which reads the same rows from files.
CREATE CONNECTION bank_db TO POSTGRES (
    HOST '127.0.0.1', PORT 5432, DATABASE 'bank', USER 'postgres');

CREATE SOURCE raw.bank_accounts
    FROM POSTGRES CONNECTION bank_db TABLE 'bank.accounts'
    WITH (description = 'Accounts as the core banking system holds them (IBAN, status)');

CREATE SOURCE raw.bank_transactions
    FROM POSTGRES CONNECTION bank_db TABLE 'bank.transactions'
    WITH (cursor = 'updated_at', primary_key = 'transaction_id', poll = '10 seconds',
          max_staleness = '5 minutes',
          description = 'The last 90 days of transactions and every new one, pending until booked');
