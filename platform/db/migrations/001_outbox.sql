-- Events waiting to be published: written in the same transaction as the
-- state change they report, published to JetStream by the relay (with
-- Nats-Msg-Id = id), then marked sent. Sent rows are pruned after a day.
create table platform.outbox (
  id uuid primary key,
  seq bigint generated always as identity,
  subject text not null,
  type_name text not null,
  payload bytea not null,
  traceparent text,
  created_at timestamptz not null default clock_timestamp(),
  -- A relay that claimed the row publishes it until then; after, another may.
  claimed_until timestamptz,
  sent_at timestamptz
);

create index outbox_unsent on platform.outbox (seq) where sent_at is null;
create index outbox_sent_at on platform.outbox (sent_at) where sent_at is not null;
