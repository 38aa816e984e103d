-- KEYS: order, index, processed, customer index, final index, product...
-- ARGV: doc, now, orderId, ttlSeconds, nowMillis, then (productId, quantity) per product key
local first = 6
local function pid(i) return ARGV[first + (i - first) * 2] end
local function qty(i) return tonumber(ARGV[first + 1 + (i - first) * 2]) end
local done = redis.call('GET', KEYS[3])
if done then return {'duplicate', done} end
-- A command naming an unknown product, or one product twice, is refused
-- before anything is written (the stock check below counts each line alone).
local seen = {}
for i = first, #KEYS do
  if seen[KEYS[i]] then return {'invalid', 'product ' .. pid(i) .. ' is on more than one line'} end
  seen[KEYS[i]] = true
  if redis.call('HEXISTS', KEYS[i], 'stock') == 0 then return {'invalid', 'unknown product ' .. pid(i)} end
end
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
  for i = first, #KEYS do
    local stock = redis.call('HGET', KEYS[i], 'stock')
    if tonumber(stock) < qty(i) then
      reason = 'insufficient stock for ' .. pid(i) .. ': requested ' .. qty(i) .. ', available ' .. stock
      break
    end
  end
  if reason then
    redis.call('HSET', KEYS[1], 'status', 'Rejected', 'reason', reason, 'updatedAt', ARGV[2])
    outcome = 'applied|Rejected|' .. reason
  else
    for i = first, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', -qty(i))
    end
    redis.call('HSET', KEYS[1], 'status', 'Confirmed', 'updatedAt', ARGV[2])
    outcome = 'applied|Confirmed|'
  end
  -- Final now: retention counts from this moment (sweep_final.lua).
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[3])
end
redis.call('SET', KEYS[3], outcome, 'EX', ARGV[4])
return {'new', outcome}
