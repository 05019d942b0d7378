-- When a running CallPluginTool gives up at the latest: a repeat of its call id
-- waits for the outcome until then, and after it knows the first never finished.
alter table plugins.tool_calls add column deadline timestamptz;
