-- Removes up to ARGV[2] orders that became final at or before ARGV[1] (Unix
-- ms), each with its entries in every index. One batch is one atomic step.
-- KEYS: final index, order index, pending index
-- ARGV: cutoffMillis, limit, order key prefix, customer index prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local fields = redis.call('HMGET', key, 'status', 'doc')
  -- Only a final order is ever in the final index; a pending one is kept
  -- whatever the index says.
  if fields[1] ~= 'Pending' then
    if fields[2] then
      local ok, doc = pcall(cjson.decode, fields[2])
      if ok and type(doc) == 'table' and type(doc.customerId) == 'string' then
        redis.call('ZREM', ARGV[4] .. doc.customerId, id)
      end
    end
    removed = removed + redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return removed
