-- Starting a turn in one round trip: the conversation check (owner, no turn
-- running), the caller's running-turns limit (under a per-user lock, so two
-- starts cannot both pass), the new conversation if asked, and the turn row
-- leased to the starting instance, with its first event (`started`, sequence
-- 1, so the turn log's first write is the answer). Returns 'ok', or why not: 'not_found'
-- (no such conversation of this user), 'busy' (a turn of it is running),
-- 'limit' (as many turns running as the tier allows). Called alone (one
-- statement, one commit) for a Chat turn, or inside a transaction that does
-- more (an agent set up, an agent run recorded).
create function chat.start_turn(
  p_turn_id text, p_conversation_id text, p_new_conversation boolean, p_user_id text, p_tier int,
  p_agent_id text, p_message text, p_owner text, p_lease_ms int, p_deadline timestamptz, p_limit int, p_started bytea
) returns text language plpgsql as $$
begin
  -- The lock first: turns of one conversation are the same user's, so the checks below see every start before this one.
  perform pg_advisory_xact_lock(hashtext('chat.turns'), hashtext(p_user_id));
  if not p_new_conversation then
    perform 1 from chat.conversations where id = p_conversation_id and user_id = p_user_id;
    if not found then return 'not_found'; end if;
    perform 1 from chat.turns where conversation_id = p_conversation_id and state = 'running' limit 1;
    if found then return 'busy'; end if;
  end if;
  if (select count(*) from chat.turns where user_id = p_user_id and state = 'running') >= p_limit then return 'limit'; end if;
  if p_new_conversation then
    insert into chat.conversations (id, user_id, agent_id) values (p_conversation_id, p_user_id, p_agent_id);
  end if;
  insert into chat.turns (id, conversation_id, user_id, tier, agent_id, message, state, lease_owner, lease_until, deadline)
  values (p_turn_id, p_conversation_id, p_user_id, p_tier, p_agent_id, p_message, 'running', p_owner,
          now() + p_lease_ms * interval '1 millisecond', p_deadline);
  insert into chat.turn_events (turn_id, seq, event) values (p_turn_id, 1, p_started);
  return 'ok';
end $$;
