-- POST /get with a where clause matching 1/groups of the collection.
package.path = package.path .. ";" .. (os.getenv("MDB_LUA_DIR") or ".") .. "/?.lua"
local c = require("common")
local count = tonumber(os.getenv("MDB_COUNT") or "1000")
local next_req
function init(args)
  next_req = c.pool(function()
    local body = string.format('{"collection":"bench","where":{"group":{"$eq":%d}},"count":%d}',
                               math.random(0, c.groups - 1), count)
    return wrk.format("POST", "/get", c.headers(), body)
  end)
end
function request() return next_req() end
