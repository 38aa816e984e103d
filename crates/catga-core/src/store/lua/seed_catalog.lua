-- KEYS: product ids set   ARGV: product key prefix, then (id, name, unitPrice, stock) per product
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
for i = 2, #ARGV, 4 do
  redis.call('HSET', ARGV[1] .. ARGV[i], 'name', ARGV[i + 1], 'unitPrice', ARGV[i + 2], 'stock', ARGV[i + 3])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1
