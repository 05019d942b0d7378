-- Event ids each durable consumer has handled, written in the handler's own
-- transaction: a redelivered event finds its id here and is skipped.
create table platform.processed_events (
  consumer text not null,
  event_id text not null,
  processed_at timestamptz not null default clock_timestamp(),
  primary key (consumer, event_id)
);

create index processed_events_at on platform.processed_events (processed_at);
