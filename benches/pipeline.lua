-- wrk: 16 pipelined requests per write (compare_http's pipelined x16,
-- benches/icount-server.sh --pipeline).
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, wrk.path) end
  req = table.concat(r)
end
request = function() return req end
