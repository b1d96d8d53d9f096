-- Deletes delivered events, but only those still leased under the acking batch's lease id: a
-- worker whose lease lapsed and was re-claimed by another must not delete the other's events.
-- KEYS: ready, delayed, leased, meta, events, enqueued. ARGV: leaseId, eventId, ...
for index = 2, #ARGV do
  local event_id = ARGV[index]
  local meta = outbox_leased_meta(KEYS[4], event_id, ARGV[1])
  if meta then
    outbox_delete(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], event_id, meta.member)
  end
end
return 1
