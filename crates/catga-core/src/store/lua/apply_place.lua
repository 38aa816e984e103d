-- KEYS: order, index, processed, customer index, product...
-- ARGV: doc, now, orderId, ttlSeconds, then (productId, quantity) per product key
local done = redis.call('GET', KEYS[3])
if done then return {'duplicate', done} end
if redis.call('HSETNX', KEYS[1], 'doc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'Pending', 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('ZADD', KEYS[4], 0, ARGV[3])
end
local status = redis.call('HGET', KEYS[1], 'status')
local outcome
if status ~= 'Pending' then
  outcome = 'unchanged|' .. status .. '|'
else
  local reason = nil
  for i = 5, #KEYS do
    local pid = ARGV[5 + (i - 5) * 2]
    local qty = tonumber(ARGV[6 + (i - 5) * 2])
    local stock = redis.call('HGET', KEYS[i], 'stock')
    if not stock then
      reason = 'unknown product ' .. pid
      break
    end
    if tonumber(stock) < qty then
      reason = 'insufficient stock for ' .. pid .. ': requested ' .. qty .. ', available ' .. stock
      break
    end
  end
  if reason then
    redis.call('HSET', KEYS[1], 'status', 'Rejected', 'reason', reason, 'updatedAt', ARGV[2])
    outcome = 'applied|Rejected|' .. reason
  else
    for i = 5, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', -tonumber(ARGV[6 + (i - 5) * 2]))
    end
    redis.call('HSET', KEYS[1], 'status', 'Confirmed', 'updatedAt', ARGV[2])
    outcome = 'applied|Confirmed|'
  end
end
redis.call('SET', KEYS[3], outcome, 'EX', ARGV[4])
return {'new', outcome}
