-- The marketplace, installations, revenue and MCP tool-call outcomes.
create schema if not exists plugins;

create table plugins.plugins (
  id text primary key,
  display_name text not null,
  description text not null default '',
  category text not null,
  publisher text not null,
  version text not null,
  -- switchyard.common.v1.Tier: 1 free, 2 pro, 3 power, 4 team.
  min_tier smallint not null default 1 check (min_tier between 1 and 4),
  price_minor_units bigint not null default 0 check (price_minor_units >= 0),
  currency_code text not null default '' check (currency_code ~ '^([A-Z]{3})?$'),
  -- switchyard.plugins.v1.PluginTool messages as protobuf JSON.
  tools jsonb not null default '[]',
  mcp_endpoint text not null default '',
  install_count bigint not null default 0 check (install_count >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (price_minor_units = 0 or currency_code <> '')
);
create index plugins_popularity on plugins.plugins (install_count desc, id);

create table plugins.installations (
  user_id text not null,
  plugin_id text not null references plugins.plugins (id),
  plugin_version text not null,
  -- Set while the user's tier is below the plugin's min_tier (see plugins.proto).
  suspended boolean not null default false,
  created_at timestamptz not null default now(),
  primary key (user_id, plugin_id)
);

-- Install idempotency keys, kept 24 hours.
create table plugins.install_requests (
  user_id text not null,
  idempotency_key text not null,
  plugin_id text not null,
  created_at timestamptz not null default now(),
  primary key (user_id, idempotency_key)
);

-- Each user's latest tier as TierChanged told us, to suspend and resume installations.
create table plugins.user_tiers (
  user_id text primary key,
  tier smallint not null check (tier between 1 and 4),
  changed_at timestamptz not null
);

-- One row per paid install: the price split between publisher and platform, in minor units.
create table plugins.revenue_events (
  id bigint generated always as identity primary key,
  user_id text not null,
  plugin_id text not null,
  publisher text not null,
  price_minor_units bigint not null check (price_minor_units > 0),
  currency_code text not null,
  publisher_minor_units bigint not null check (publisher_minor_units >= 0),
  platform_minor_units bigint not null check (platform_minor_units >= 0),
  created_at timestamptz not null default now(),
  check (publisher_minor_units + platform_minor_units = price_minor_units)
);

-- Outcomes of CallPluginTool by call id: a repeated call id answers the first outcome.
create table plugins.tool_calls (
  user_id text not null,
  call_id text not null,
  plugin_id text not null,
  tool_name text not null,
  -- null while the call runs.
  content text,
  is_error boolean,
  structured_json text not null default '',
  created_at timestamptz not null default now(),
  primary key (user_id, call_id)
);

-- The seed catalog: plugins whose tools run on the user's device (server-side plugins come through UpsertPlugin, which checks their endpoint).
insert into plugins.plugins (id, display_name, description, category, publisher, version, min_tier, price_minor_units, currency_code, tools) values
  ('calendar', 'Calendar', 'Reads and creates events in the calendars on your device.', 'productivity', 'Switchyard', '1.0.0', 1, 0, '',
   '[{"name":"calendar.list_events","description":"Lists calendar events between two times.","inputSchema":{"type":"object","properties":{"from":{"type":"string"},"to":{"type":"string"}},"required":["from","to"]},"annotations":{"readOnlyHint":true},"runtime":"TOOL_RUNTIME_DEVICE"},{"name":"calendar.create_event","description":"Creates a calendar event.","inputSchema":{"type":"object","properties":{"title":{"type":"string"},"start":{"type":"string"},"end":{"type":"string"}},"required":["title","start","end"]},"annotations":{},"runtime":"TOOL_RUNTIME_DEVICE"}]'),
  ('clipboard', 'Clipboard', 'Reads and writes the clipboard of your device.', 'utilities', 'Switchyard', '1.0.0', 1, 0, '',
   '[{"name":"clipboard.read","description":"Returns the clipboard text.","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true},"runtime":"TOOL_RUNTIME_DEVICE"}]'),
  ('files-pro', 'Files Pro', 'Searches, moves and deletes files on your device.', 'productivity', 'Acme Tools', '2.1.0', 2, 499, 'EUR',
   '[{"name":"files.search","description":"Finds files by name.","inputSchema":{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]},"annotations":{"readOnlyHint":true},"runtime":"TOOL_RUNTIME_DEVICE"},{"name":"files.delete","description":"Deletes a file.","inputSchema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]},"annotations":{"destructiveHint":true},"runtime":"TOOL_RUNTIME_DEVICE"}]');
