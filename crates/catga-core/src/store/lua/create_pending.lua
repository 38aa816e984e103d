-- KEYS: order, index, customer index, pending index   ARGV: doc, now, orderId, createdAtMs
-- The pending index first and whatever happens next: an order whose command
-- never gets published is found there again (overdue_pending); an entry whose
-- order has moved on is dropped by the re-publisher.
redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[3])
if redis.call('HSETNX', KEYS[1], 'doc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'Pending', 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('ZADD', KEYS[3], 0, ARGV[3])
end
return 1
