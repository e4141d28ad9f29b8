--- Runs the cases of a fuzzer, `at_once` at a time, driving the loop:
-- start(n) makes case n; done(case) says it is over (and checks it);
-- stuck(case) is called for one still going after 30 s (it fails the
-- run). step() drives the loop once (default evtcp.step(0.01)). Bounded:
-- 10 minutes in all.
local evtcp = require("evtcp")

return function(total, at_once, start, done, stuck, step)
  step = step or function() evtcp.step(0.01) end
  local live, started = {}, 0
  local deadline = os.time() + 600
  while (started < total or #live > 0) and os.time() < deadline do
    while started < total and #live < at_once do
      started = started + 1
      live[#live + 1] = { case = start(started), since = os.time() }
    end
    step()
    for i = #live, 1, -1 do
      local e = live[i]
      if done(e.case) then table.remove(live, i)
      elseif os.time() - e.since > 30 then stuck(e.case) end
    end
  end
  assert(#live == 0 and started == total, "the cases did not finish in 10 minutes")
end
