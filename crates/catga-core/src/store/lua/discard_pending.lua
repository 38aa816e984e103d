-- KEYS: order, index, customer index   ARGV: orderId
if redis.call('HGET', KEYS[1], 'status') == 'Pending' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
