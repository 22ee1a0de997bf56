-- POST /get {"collection":"bench","keys":"k<random>"}
package.path = package.path .. ";" .. (os.getenv("MDB_LUA_DIR") or ".") .. "/?.lua"
local c = require("common")
local next_req
function init(args)
  next_req = c.pool(function()
    local body = string.format('{"collection":"bench","keys":"k%d"}', math.random(1, c.keys))
    return wrk.format("POST", "/get", c.headers(), body)
  end)
end
function request() return next_req() end
