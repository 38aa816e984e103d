-- KEYS: order, processed, product...   ARGV: now, ttlSeconds, quantity per product key
local done = redis.call('GET', KEYS[2])
if done then return {'duplicate', done} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
local outcome
if status == 'Pending' or status == 'Confirmed' then
  if status == 'Confirmed' then
    for i = 3, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', tonumber(ARGV[i]))
    end
  end
  redis.call('HSET', KEYS[1], 'status', 'Cancelled', 'updatedAt', ARGV[1])
  outcome = 'applied|Cancelled|'
else
  outcome = 'unchanged|' .. status .. '|'
end
redis.call('SET', KEYS[2], outcome, 'EX', ARGV[2])
return {'new', outcome}
