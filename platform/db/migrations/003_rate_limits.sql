-- Per-user request budgets shared by every instance (GCRA: one theoretical
-- arrival time per key, in epoch milliseconds). Unlogged: losing it in a
-- crash only forgives some requests, and no write waits on the WAL.
create unlogged table platform.rate_limits (
  key text primary key,
  tat double precision not null,
  allowed boolean not null default true
);
