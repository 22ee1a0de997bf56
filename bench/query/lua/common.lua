-- Shared by the query benchmark scripts: options from the environment,
-- a pool of prebuilt requests cycled through so wrk's cost per request is
-- the same for every server.
local M = {}
M.token = os.getenv("MDB_TOKEN") or ""
M.keys = tonumber(os.getenv("MDB_KEYS") or "100000")
M.groups = tonumber(os.getenv("MDB_GROUPS") or "100")
M.pool_size = tonumber(os.getenv("MDB_POOL") or "10000")

function M.headers()
  local h = {["Content-Type"] = "application/json"}
  if M.token ~= "" then h["Authorization"] = "Bearer " .. M.token end
  return h
end

-- About 200 bytes of JSON; group = n % groups, so each group is 1/groups of the data.
function M.doc(n)
  return string.format(
    '{"name":"item-%d","group":%d,"price":%d,"in_stock":%s,"tags":["alpha","beta"],' ..
    '"description":"a benchmark document of about two hundred bytes","rating":%d.5,"sku":"SKU-%08d"}',
    n, n % M.groups, (n * 7919) % 100000, (n % 2 == 0) and "true" or "false", n % 5, n)
end

function M.pool(make)
  local reqs = {}
  local seed = tonumber(os.getenv("MDB_SEED") or "0")
  if seed == 0 then seed = os.time() + math.floor(os.clock() * 1000000) end
  math.randomseed(seed)
  for i = 1, M.pool_size do reqs[i] = make(i) end
  local idx = 0
  return function()
    idx = idx % #reqs + 1
    return reqs[idx]
  end
end

return M
