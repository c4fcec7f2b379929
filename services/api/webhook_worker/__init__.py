"""Outbound webhooks, the delivery side: routed mentions fanned out to the departments' endpoints, POSTed
with an HMAC-SHA256 signature, retried with backoff.

Two loops run in every API process (unless `MR_WEBHOOK_WORKER=false`):

- the fan-out (`fanout`) consumes the department topics `mentions.routed.<department>` as its own consumer
  group, through a Stage: for each record and each enabled endpoint of that department subscribed to the
  event's type, it inserts a delivery, one transaction per batch, and the offsets are committed after that
  transaction. Deliveries are unique per (endpoint, event id = `ce_id`), so a redelivered record inserts
  nothing twice. The consumer joins its group once some endpoint is enabled, and an endpoint only gets
  events published after it was registered (the group starts at the topics' beginning the first time it
  runs).
- the sender (`worker`) claims due deliveries (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so API replicas share
  them) by moving their `next_attempt_at` past a lease, POSTs them through the SSRF guard (`sender`), and
  records the answer (`retry`): 2xx delivered; 410 Gone dead, and the endpoint disabled; anything else
  (another status, a timeout, a refused connection) tried again after the retry schedule, and dead after
  `MR_WEBHOOK_MAX_ATTEMPTS`. A process that stops mid-request leaves the delivery to be tried again once the
  lease ends: at-least-once, and receivers drop duplicates by the `X-MentionRouter-Delivery` header.

The other modules: `signing` (the signature a receiver checks), `urls` (where a webhook may be sent),
`deliveries` (the SQL on the deliveries and endpoints tables), `metrics` (the `mr_webhook_*` series) and
`loops` (what both loops do while they wait or after a failed round).
"""
