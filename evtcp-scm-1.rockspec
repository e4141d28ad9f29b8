rockspec_format = "3.0"
package = "evtcp"
version = "scm-1"
-- PLACEHOLDER: example.invalid is not a real host. The maintainers put the
-- public repository's URL here when it is published (README, "Releases").
source = {
  url = "git+https://example.invalid/evtcp.git",
}
description = {
  summary = "Asynchronous TCP for Lua 5.4 on libevent: connections, listeners, events",
  detailed = [[
evtcp gives Lua 5.4 asynchronous TCP client connections and listeners with
the object model of 4D's TCPConnection / TCPListener / TCPEvent, written in
C on libevent bufferevents.
]],
  license = "MIT",
  homepage = "https://example.invalid/evtcp",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBEVENT = { header = "event2/bufferevent_ssl.h", library = "event_openssl" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "builtin",
  copy_directories = { "docs", "examples" },
  -- the licence and the README go with the rock too (beside its rockspec:
  -- copy_directories turns LuaRocks' own copying of them off)
  install = {
    conf = { ["LICENSE"] = "LICENSE", ["README.md"] = "README.md" },
  },
  modules = {
    ["evtcp"] = "lua/evtcp/init.lua",
    ["evtcp.core"] = {
      sources = {
        "src/conn.c", "src/conn_connect.c", "src/conn_events.c", "src/conn_frame.c", "src/conn_options.c", "src/conn_props.c", "src/conn_race.c", "src/conn_read.c", "src/conn_receive.c", "src/conn_send.c", "src/conn_sockopt.c", "src/conn_upgrade.c", "src/error.c", "src/event.c", "src/listener.c", "src/listener_proxy.c", "src/pool.c", "src/proxy.c",
        "src/linger.c", "src/loop.c", "src/module.c", "src/object.c", "src/resolve.c", "src/resolver.c", "src/sockaddr.c", "src/socket.c", "src/signal.c", "src/timer.c", "src/tls.c", "src/tls_cache.c", "src/tls_info.c", "src/tls_options.c",
        "src/transport_tcp.c", "src/transport_tls.c",
      },
      libraries = { "event_openssl", "event", "ssl", "crypto" },
      incdirs = { "$(LIBEVENT_INCDIR)", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(LIBEVENT_LIBDIR)", "$(OPENSSL_LIBDIR)" },
    },
  },
}
