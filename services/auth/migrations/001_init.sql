-- Auth's tables: users, signing keys, refresh-token families, login throttles.
create schema if not exists auth;

create table auth.users (
  id uuid primary key,
  email text not null,
  display_name text not null default '',
  -- argon2id PHC string; the parameters travel in it, so old hashes are recognised and upgraded at login.
  password_hash text not null,
  -- switchyard.common.v1.Tier: 1 free, 2 pro, 3 power, 4 team.
  tier smallint not null default 1 check (tier between 1 and 4),
  -- The role "service" belongs to Switchyard services only, never to a user.
  roles text[] not null default '{}' check (not ('service' = any (roles))),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- occur_time of the last TierChanged applied: an older event arriving late is ignored.
  tier_changed_at timestamptz
);
create unique index users_email_key on auth.users (lower(email));

create table auth.signing_keys (
  kid text primary key,
  alg text not null,
  public_jwk jsonb not null,
  -- PKCS#8 private key sealed with AES-256-GCM under AUTH_MASTER_KEY (kid as associated data).
  private_key bytea not null,
  created_at timestamptz not null default now(),
  -- Signs from this time until a newer key's active_from; published from creation (pre-publication).
  active_from timestamptz not null,
  -- Latest exp of a long-lived (service) token it signed: it stays published at least until then.
  tokens_until timestamptz
);

create table auth.token_families (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  revoked_at timestamptz,
  revoke_reason text
);
create index token_families_user_idx on auth.token_families (user_id);

create table auth.refresh_tokens (
  -- SHA-256 of the token; the token itself is never stored.
  token_hash bytea primary key,
  family_id uuid not null references auth.token_families (id) on delete cascade,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  -- Set when the token is spent; presenting it again is reuse and revokes the family.
  used_at timestamptz
);
create index refresh_tokens_family_idx on auth.refresh_tokens (family_id);
create index refresh_tokens_expiry_idx on auth.refresh_tokens (expires_at);

-- Fixed-window counters of login and registration attempts, per account and per client address.
create table auth.throttle (
  key text primary key,
  hits integer not null,
  window_start timestamptz not null
);
