-- POST /get with one fixed body, taken from MDB_BODY (bench/query/fold.py).
package.path = package.path .. ";" .. (os.getenv("MDB_LUA_DIR") or ".") .. "/?.lua"
local c = require("common")
local req
function init(args)
  req = wrk.format("POST", "/get", c.headers(), os.getenv("MDB_BODY"))
end
function request() return req end
