-- POST /set of MDB_BATCH documents with fresh keys (w<random>).
package.path = package.path .. ";" .. (os.getenv("MDB_LUA_DIR") or ".") .. "/?.lua"
local c = require("common")
local batch = tonumber(os.getenv("MDB_BATCH") or "1")
if batch > 1 then c.pool_size = tonumber(os.getenv("MDB_POOL") or "50") end
local next_req
function init(args)
  next_req = c.pool(function()
    local parts = {}
    for j = 1, batch do
      local n = math.random(1, 1000000000)
      parts[j] = string.format('"w%d":%s', n, c.doc(n))
    end
    local body = '{"collection":"benchw","data":{' .. table.concat(parts, ",") .. '}}'
    return wrk.format("POST", "/set", c.headers(), body)
  end)
end
function request() return next_req() end
