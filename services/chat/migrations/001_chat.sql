-- Chat's own schema: conversations and their history, turns as durable
-- state machines (lease, steps, events), approvals, the agent catalogue and
-- agent runs.
create schema if not exists chat;

create table chat.conversations (
  id text primary key,
  user_id text not null,
  agent_id text not null default '',
  created_at timestamptz not null default now()
);
create index conversations_user on chat.conversations (user_id, created_at);

-- The history the model sees: the messages of finished turns, in order.
create table chat.messages (
  conversation_id text not null references chat.conversations (id) on delete cascade,
  position int not null,
  turn_id text not null,
  message jsonb not null,
  primary key (conversation_id, position)
);

-- A turn: one user message and everything the assistant did for it. While
-- running, the instance holding the lease runs it and renews the lease;
-- another instance claims a turn whose lease ran out.
create table chat.turns (
  id text primary key,
  conversation_id text not null references chat.conversations (id) on delete cascade,
  user_id text not null,
  tier int not null,
  agent_id text not null default '',
  message text not null,
  state text not null check (state in ('running', 'done', 'failed', 'cancelled')),
  lease_owner text,
  lease_until timestamptz,
  deadline timestamptz not null,
  input_tokens bigint not null default 0,
  output_tokens bigint not null default 0,
  tool_calls int not null default 0,
  finish_reason int not null default 0,
  error_code int not null default 0,
  error_message text not null default '',
  created_at timestamptz not null default now(),
  finished_at timestamptz
);
create index turns_running on chat.turns (lease_until) where state = 'running';
create index turns_user_running on chat.turns (user_id) where state = 'running';
create index turns_conversation on chat.turns (conversation_id, created_at);

-- Each model call and its output, each tool call and its outcome, as they
-- finish. A tool call's id is derived from (turn, step).
create table chat.turn_steps (
  turn_id text not null references chat.turns (id) on delete cascade,
  step int not null,
  kind text not null check (kind in ('model', 'tool')),
  data jsonb not null,
  created_at timestamptz not null default now(),
  primary key (turn_id, step)
);

-- Every event a turn's stream carried, in order (binary ChatResponse), so a
-- client that reconnects gets what it missed.
create table chat.turn_events (
  turn_id text not null references chat.turns (id) on delete cascade,
  seq bigint not null,
  event bytea not null,
  primary key (turn_id, seq)
);

-- Approval requests of destructive tool calls and the user's answers.
create table chat.approvals (
  turn_id text not null references chat.turns (id) on delete cascade,
  call_id text not null,
  approved boolean,
  answered_at timestamptz,
  primary key (turn_id, call_id)
);

-- The agent catalogue: agents are data.
create table chat.agents (
  id text primary key,
  display_name text not null,
  description text not null,
  min_tier int not null,
  system_prompt text not null,
  tools text[] not null,
  input_schema jsonb not null default '{}'::jsonb
);

-- Agents a user has set up (through a Chat turn with the agent's id).
create table chat.user_agents (
  user_id text not null,
  agent_id text not null references chat.agents (id),
  created_at timestamptz not null default now(),
  primary key (user_id, agent_id)
);

-- Agent runs: a turn started in the background from the run's input.
create table chat.agent_runs (
  id text primary key,
  user_id text not null,
  agent_id text not null references chat.agents (id),
  turn_id text not null references chat.turns (id),
  conversation_id text not null,
  input jsonb not null,
  idempotency_key text,
  state text not null check (state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  output jsonb,
  error_message text not null default '',
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz
);
create unique index agent_runs_idempotency on chat.agent_runs (user_id, idempotency_key) where idempotency_key is not null;
create index agent_runs_user on chat.agent_runs (user_id, created_at desc, id desc);
create index agent_runs_turn on chat.agent_runs (turn_id);

insert into chat.agents (id, display_name, description, min_tier, system_prompt, tools, input_schema) values
  ('task_agent', 'Tasks', 'Creates, updates and completes tasks in the task app on your device.', 1,
   'You are the task agent. You manage the user''s tasks with the task tools of their device. Use tools to act; confirm briefly what you did.',
   array['tasks.list_tasks', 'tasks.create_task', 'tasks.update_task', 'tasks.complete_task'],
   '{"type":"object","properties":{"instruction":{"type":"string","maxLength":4000}},"required":["instruction"]}'),
  ('project_agent', 'Projects', 'Plans projects: breaks goals into tasks and milestones.', 2,
   'You are the project agent. You plan the user''s projects with the project and task tools of their device.',
   array['projects.list_projects', 'projects.create_project', 'tasks.create_task'],
   '{"type":"object","properties":{"instruction":{"type":"string","maxLength":4000}},"required":["instruction"]}'),
  ('note_agent', 'Notes', 'Writes, finds and tidies notes on your device.', 1,
   'You are the note agent. You write and find the user''s notes with the note tools of their device.',
   array['notes.search_notes', 'notes.create_note', 'notes.update_note'],
   '{"type":"object","properties":{"instruction":{"type":"string","maxLength":4000}},"required":["instruction"]}'),
  ('timeline_agent', 'Timeline', 'Summarises what happened on your devices over a period.', 2,
   'You are the timeline agent. You read the user''s activity timeline from their device and summarise it.',
   array['timeline.list_events'],
   '{"type":"object","properties":{"instruction":{"type":"string","maxLength":4000}},"required":["instruction"]}'),
  ('filesystem_agent', 'Files', 'Reads, writes and organises files on your computer; asks before deleting or overwriting.', 3,
   'You are the filesystem agent. You work with the user''s files through the filesystem tools of their device.',
   array['filesystem.list_dir', 'filesystem.read_file', 'filesystem.write_file', 'filesystem.delete_file'],
   '{"type":"object","properties":{"instruction":{"type":"string","maxLength":4000}},"required":["instruction"]}');
