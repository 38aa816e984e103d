-- KEYS: product ids set (or nothing)   ARGV: product key prefix, then ids when KEYS is empty
local ids
if #KEYS > 0 then
  ids = redis.call('SORT', KEYS[1], 'ALPHA')
else
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HMGET', ARGV[1] .. id, 'name', 'unitPrice', 'stock')
  out[#out + 1] = {id, p[1], p[2], p[3]}
end
return out
