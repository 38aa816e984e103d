-- KEYS: index (all orders, or one customer's)   ARGV: max ('+' or '(<id>'), limit, order key prefix
-- One round trip for a whole page: this is the endpoint load generators hammer.
-- The range reads only the page asked for (O(log n + limit)), so a customer's
-- listing costs the same with ten orders in the store as with a million.
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2]))
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = redis.call('HMGET', ARGV[3] .. id, 'doc', 'status', 'reason', 'updatedAt')
end
return page
