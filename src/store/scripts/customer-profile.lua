-- A customer's profile in one read: lifetime spend, first payment date, subscriptions, and the
-- usage counters of each subscription's current period. The period keys are built here rather
-- than passed in because which periods are current is only known once the subscriptions are
-- read.
-- KEYS: spend, subscriptions. ARGV: the customer's usage key prefix.
-- Returns { spend or '', firstPaymentAt or '', { { record, subscriptionId, usage fields (HGETALL) }, … } }.
return profile_read(KEYS[1], KEYS[2], ARGV[1], subscriptions_read(KEYS[2]))
