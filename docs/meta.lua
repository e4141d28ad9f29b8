---@meta evtcp
-- LuaLS type stubs for evtcp (docs/reference.md has the words). Installed
-- with the rock under docs/; point "workspace.library" at this file.
-- spec/reference_spec.lua checks these names against the module's exports.

---@class evtcp.Error
---@field kind "refused"|"unreachable"|"dns"|"timeout"|"reset"|"tls"|"accept"|"io"
---@field message string
---@field componentSignature "evtcp"|"libevent"|"dns"|"openssl"
---@field errCode integer
---@field errName string the symbolic name: "ECONNREFUSED", "EAI_NONAME", "CERTIFICATE_VERIFY_FAILED"

---@class evtcp.TCPEvent
---@field type "connection"|"data"|"end"|"drain"|"close"|"error"|"terminate"
---@field data string? the bytes, for "data"
---@field ip string the remote address
---@field port integer? the remote port
---@field error evtcp.Error? for "error"

---@class evtcp.PeerCertificate
---@field subject string
---@field issuer string
---@field subjectAltNames string[] "DNS:name", "IP:addr", "email:x", "URI:u"
---@field fingerprint string SHA-256 of the DER certificate, lower-case hex (64 digits)
---@field serial string lower-case hex
---@field notBefore integer epoch seconds
---@field notAfter integer epoch seconds
---@field pem string

---@class evtcp.TLSInfo
---@field protocol string
---@field cipher string
---@field peerCertificate evtcp.PeerCertificate?
---@field peerChain string[]? the PEM texts of the chain the peer sent, its own certificate first
---@field alpn string? the protocol ALPN chose
---@field resumed boolean true when the TLS session was resumed

---@class evtcp.TLSOptions
---@field serverName string?
---@field verify boolean?
---@field ca string? path or PEM text
---@field cert string? path or PEM text
---@field key string? path or PEM text
---@field alpn string[]? protocols offered (clients) or accepted (listeners), in preference order
---@field sni table<string, {cert: string, key: string, password: string?}>? listeners: the certificate for each name
---@field ciphers string? OpenSSL cipher list for TLS 1.2
---@field ciphersuites string? TLS 1.3 suites, colon-separated
---@field minVersion "1.2"|"1.3"?
---@field maxVersion "1.2"|"1.3"?
---@field password string? of an encrypted key
---@field crl string? path or PEM text: revocation lists checked with ca

---@class evtcp.KeepAlive
---@field idle integer? seconds before the first probe (nil: the system's)
---@field interval integer? seconds between probes
---@field count integer? unanswered probes that fail the connection

---@class evtcp.Handler
---@field onConnection fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onData fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onEnd fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onUpgrade fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)? startTLS's handshake is done
---@field onDrain fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onShutdown fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onError fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field onTerminate fun(self: evtcp.Handler, conn: evtcp.TCPConnection, event: evtcp.TCPEvent)?
---@field noDelay boolean?
---@field timeout number?
---@field pool string? the pool's key (default: address, port, TLS settings)
---@field attemptDelay number? Happy Eyeballs: seconds between attempts at a name's addresses (0.25)
---@field readTimeout number?
---@field writeTimeout number?
---@field keepAlive number|boolean|evtcp.KeepAlive?
---@field userTimeout number? seconds: TCP_USER_TIMEOUT
---@field fastOpen boolean? the first data in the SYN (TCP_FASTOPEN_CONNECT)
---@field highWaterMark integer?
---@field allowHalfOpen boolean?
---@field framing "line"|integer|{ delimiter: string }?
---@field localAddress string?
---@field localPort integer?
---@field tls boolean|evtcp.TLSOptions?

---@class evtcp.ListenerOptions
---@field onConnection (fun(self: evtcp.ListenerOptions, listener: evtcp.TCPListener, event: evtcp.TCPEvent): evtcp.Handler|false|nil)? without it, clients wait for accept()
---@field onError fun(self: evtcp.ListenerOptions, listener: evtcp.TCPListener, event: evtcp.TCPEvent)?
---@field onTerminate fun(self: evtcp.ListenerOptions, listener: evtcp.TCPListener, event: evtcp.TCPEvent)?
---@field address string?
---@field backlog integer?
---@field reusePort boolean?
---@field ipv6Only boolean?
---@field fd integer?
---@field proxyProtocol boolean?
---@field maxConnections integer?
---@field tls evtcp.TLSOptions?
---@field fastOpen integer? TCP Fast Open's queue length
---@field noDelay boolean?
---@field keepAlive number|boolean|evtcp.KeepAlive?
---@field userTimeout number?
---@field readTimeout number?
---@field writeTimeout number?
---@field highWaterMark integer?
---@field allowHalfOpen boolean?
---@field framing "line"|integer|{ delimiter: string }?

---@class evtcp.TCPConnection
---@field closed boolean
---@field errors evtcp.Error[]
---@field noDelay boolean
---@field keepAlive number|boolean|evtcp.KeepAlive
---@field userTimeout number?
---@field fd integer? the socket, while there is one
---@field reusedTimes integer how often its socket was taken from the pool
---@field remoteAddress string?
---@field remotePort integer?
---@field localAddress string?
---@field localPort integer?
---@field bufferedAmount integer
---@field bytesRead integer
---@field bytesWritten integer
---@field handler evtcp.Handler
---@field tls evtcp.TLSInfo?
---@field framing "line"|integer|{ delimiter: string }|nil
local TCPConnection = {}

--- Upgrades this open plain connection to TLS on the same socket (a client's
--- or a server's by how it was made). Waits in a coroutine or at the top
--- level; in a plain callback returns true at once and onUpgrade follows.
--- Buffered unread input fails it (kind "tls"): a STARTTLS injection.
---@param tlsOptions evtcp.TLSOptions|true|nil
---@return true|nil ok
---@return evtcp.Error? err
function TCPConnection:startTLS(tlsOptions) end

--- Puts this open, idle client connection into the pool (the object is
--- detached: its methods raise); connect/dial with the same key take it.
---@param idleTimeout number? seconds kept (60; 0: no limit)
---@param poolSize integer? connections kept per key (30)
---@return true|nil ok
---@return string? message
function TCPConnection:setKeepAlive(idleTimeout, poolSize) end

--- Sets a socket option by name ("rcvbuf", "sndbuf", "linger", "tos", "ttl",
--- "quickack", "mark", "bindToDevice", "nodelay", "keepalive", "reuseaddr").
---@param name string
---@param value integer|boolean|string
---@return true|nil ok
---@return string? err
function TCPConnection:setOption(name, value) end

--- Reads a socket option back from the socket.
---@param name string
---@return integer|boolean|string|nil value
---@return string? err
function TCPConnection:getOption(name) end

---@param ... string|number
---@return true|nil ok
---@return string? err "closed"
function TCPConnection:send(...) end
function TCPConnection:shutdown() end
function TCPConnection:close() end
function TCPConnection:reset() end
function TCPConnection:pause() end
function TCPConnection:resume() end
---@param read number?
---@param write number?
function TCPConnection:setTimeouts(read, write) end
---@param timeout number?
---@return boolean closed
function TCPConnection:wait(timeout) end
---@param pattern (integer|"l"|"*l"|"a"|"*a")?
---@param timeout number?
---@return string? data
---@return string? err "timeout", "closed", "too long" or a message
---@return string? partial
function TCPConnection:receive(pattern, timeout) end
---@param delimiter string
---@param timeout number?
---@return string? data
---@return string? err
---@return string? partial
function TCPConnection:receiveUntil(delimiter, timeout) end

---@class evtcp.TCPListener
---@field port integer
---@field address string
---@field closed boolean
---@field connections integer
---@field errors evtcp.Error[]
---@field handler evtcp.ListenerOptions
local TCPListener = {}

function TCPListener:terminate() end
function TCPListener:close() end
---@param timeout number?
---@return evtcp.TCPConnection? conn
---@return string? err "timeout" or "closed"
function TCPListener:accept(timeout) end
---@param timeout number?
---@return boolean closed
function TCPListener:wait(timeout) end

---@class evtcp.Timer
local Timer = {}
---@return boolean stopped
function Timer:cancel() end

---@class evtcp.Signal
local Signal = {}
---@return boolean removed
function Signal:cancel() end

---@class evtcp
---@field _VERSION string
---@field version string
---@field TCPConnection { new: fun(address: string, port: integer, handler: evtcp.Handler?): evtcp.TCPConnection }
---@field TCPListener { new: fun(port: integer, options: evtcp.ListenerOptions?): evtcp.TCPListener? }
local evtcp = {}

---@param address string a host name, an IP address, or "unix:/path" / "unix:@name"
---@param port integer? nil for a Unix socket
---@param handler evtcp.Handler?
---@return evtcp.TCPConnection
---@overload fun(unix_address: string, handler: evtcp.Handler?): evtcp.TCPConnection
function evtcp.connect(address, port, handler) end
---@param port integer|string|nil a port, "unix:/path", or nil with options.fd
---@param options evtcp.ListenerOptions?
---@return evtcp.TCPListener? listener
---@return string? message
---@return integer? errCode
---@return evtcp.Error? err
function evtcp.listen(port, options) end
---@param address string a host name, an IP address, or "unix:/path" / "unix:@name"
---@param port integer? nil for a Unix socket
---@param options evtcp.Handler?
---@return evtcp.TCPConnection? conn
---@return evtcp.Error? err
---@overload fun(unix_address: string, options: evtcp.Handler?): evtcp.TCPConnection?, evtcp.Error?
function evtcp.dial(address, port, options) end
---@param timeout number?
---@return boolean finished
function evtcp.run(timeout) end
---@param timeout number?
---@return boolean active
---@return boolean idle
function evtcp.step(timeout) end
function evtcp.stop() end
---@param seconds number
function evtcp.sleep(seconds) end
---@param seconds number
---@param fn fun(timer: evtcp.Timer)
---@return evtcp.Timer
function evtcp.after(seconds, fn) end
---@param fn function
---@param ... any
---@return thread
function evtcp.spawn(fn, ...) end
---@param name string
---@param timeout number?
---@return string[]? addresses
---@return evtcp.Error? err
function evtcp.resolve(name, timeout) end
---@param options { hosts: string? } hosts: a file in the /etc/hosts format, answered too
---@return true? ok
---@return string? message
function evtcp.setResolver(options) end
---@param name "INT"|"TERM"|"HUP"|"QUIT"|"USR1"|"USR2"|"SIGINT"|"SIGTERM"|"SIGHUP"|"SIGQUIT"|"SIGUSR1"|"SIGUSR2"
---@param fn fun(handle: evtcp.Signal, name: string)
---@return evtcp.Signal
function evtcp.signal(name, fn) end

return evtcp
