-- POST /get sorted by a numeric field, count 10 (a full scan plus top-10).
package.path = package.path .. ";" .. (os.getenv("MDB_LUA_DIR") or ".") .. "/?.lua"
local c = require("common")
local next_req
function init(args)
  next_req = c.pool(function()
    local order = (math.random(0, 1) == 0) and "asc" or "desc"
    local body = '{"collection":"bench","sort":[{"field":"price","order":"' .. order .. '"}],"count":10}'
    return wrk.format("POST", "/get", c.headers(), body)
  end)
end
function request() return next_req() end
