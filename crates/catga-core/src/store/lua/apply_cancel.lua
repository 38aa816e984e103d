-- KEYS: order, processed, final index, product...
-- ARGV: now, ttlSeconds, nowMillis, orderId, quantity per product key (ARGV[i + 1] for KEYS[i])
local done = redis.call('GET', KEYS[2])
if done then return {'duplicate', done} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
local outcome
if status == 'Pending' or status == 'Confirmed' then
  if status == 'Confirmed' then
    for i = 4, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', tonumber(ARGV[i + 1]))
    end
  end
  redis.call('HSET', KEYS[1], 'status', 'Cancelled', 'updatedAt', ARGV[1])
  -- Final now: retention counts from this moment (sweep_final.lua).
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  outcome = 'applied|Cancelled|'
else
  outcome = 'unchanged|' .. status .. '|'
end
redis.call('SET', KEYS[2], outcome, 'EX', ARGV[2])
return {'new', outcome}
