--- The fuzzers' seeded randomness: require("attack.random")(seed, salt)
-- gives rand(n) (1..n), chance(p) and pick(t), the same sequence for the
-- same seed and salt (each fuzzer has its own salt).
return function(seed, salt)
  local state = seed * 2654435761 % 4294967296 + salt
  local R = {}
  function R.rand(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state // 65536 % n + 1
  end
  function R.chance(p) return R.rand(1000) <= p * 1000 end
  function R.pick(t) return t[R.rand(#t)] end
  return R
end
