-- KEYS: order, index, customer index   ARGV: doc, now, orderId
if redis.call('HSETNX', KEYS[1], 'doc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'Pending', 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('ZADD', KEYS[3], 0, ARGV[3])
end
return 1
