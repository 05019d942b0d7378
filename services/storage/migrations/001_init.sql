-- Storage's tables: records, vectors, backups, their blobs, usage counters, idempotency keys.
create schema if not exists storage;

-- One row per user who ever stored something: usage counters kept in the
-- same transaction as every write (its row lock orders a user's writes, so
-- quotas hold under concurrency) and the tier last seen on the user's token.
create table storage.owners (
  user_id text primary key,
  -- switchyard.common.v1.Tier: 1 free, 2 pro, 3 power, 4 team.
  tier smallint not null default 1,
  record_count bigint not null default 0,
  record_bytes bigint not null default 0,
  vector_count bigint not null default 0
);

create table storage.records (
  user_id text not null,
  record_id text not null,
  key_id text not null,
  content_type text not null default '',
  labels jsonb not null default '{}',
  -- Length of the client's ciphertext (what quotas count).
  size_bytes bigint not null,
  etag text not null,
  create_time timestamptz not null default now(),
  update_time timestamptz not null default now(),
  -- The client's ciphertext encrypted again at rest (keyring.ts): in this
  -- column (PostgreSQL blobs) or in the S3 object blob_key, never both.
  body bytea,
  blob_key text,
  -- The record's data key, wrapped by the KEK kek_id.
  wrapped_key bytea not null,
  kek_id text not null,
  primary key (user_id, record_id),
  check ((body is null) <> (blob_key is null))
);
create index records_newest on storage.records (user_id, create_time desc, record_id desc);
create index records_labels on storage.records using gin (labels jsonb_path_ops);
create index records_kek on storage.records (kek_id);

-- Blobs in S3 that no row may reference: an upload about to happen (due
-- after the grace period: if its row never commits, the sweeper deletes the
-- object) or a version that was replaced or deleted (due after the grace
-- period too, so a backup reading an older snapshot still finds it).
create table storage.blob_sweep (
  blob_key text primary key,
  due_at timestamptz not null
);
create index blob_sweep_due on storage.blob_sweep (due_at);

-- Idempotency keys of creating RPCs: the request's digest and the result.
create table storage.idempotency (
  user_id text not null,
  method text not null,
  key text not null,
  request_digest text not null,
  result_id text not null,
  created_at timestamptz not null default now(),
  primary key (user_id, method, key)
);

create table storage.collections (
  user_id text not null,
  collection text not null,
  dimensions integer not null check (dimensions between 1 and 4096),
  created_at timestamptz not null default now(),
  primary key (user_id, collection)
);

create table storage.vectors (
  user_id text not null,
  collection text not null,
  vector_id text not null,
  dims integer not null,
  -- float32 little-endian; the exact search reads it, backups copy it.
  embedding bytea not null,
  labels jsonb not null default '{}',
  update_time timestamptz not null default now(),
  primary key (user_id, collection, vector_id),
  foreign key (user_id, collection) references storage.collections on delete cascade
);

create table storage.backups (
  user_id text not null,
  backup_id text not null,
  description text not null default '',
  record_count bigint not null,
  vector_count bigint not null,
  size_bytes bigint not null,
  create_time timestamptz not null,
  -- The archive encrypted at rest, like a record's bytes.
  body bytea,
  blob_key text,
  wrapped_key bytea not null,
  kek_id text not null,
  primary key (user_id, backup_id),
  check ((body is null) <> (blob_key is null))
);
create index backups_newest on storage.backups (user_id, create_time desc, backup_id desc);

-- pgvector where the server has it (the embedded PGlite and the compose
-- image do; Debian's PostgreSQL here does not): a `vector` copy of each
-- embedding, indexed per number of dimensions (HNSW, cosine) as collections
-- of that size appear (vectors.ts).
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'vector') then
    create extension if not exists vector with schema public;
    alter table storage.vectors add column embedding_v public.vector;
  end if;
end
$$;
