-- Rate-limit leases: a request for several requests' worth of budget at once
-- records how many it was granted, so the upsert can return it (see
-- platform/limits/limiter.ts).
alter table platform.rate_limits add column granted integer not null default 0;
