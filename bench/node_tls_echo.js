// bench/node_tls_echo.js - the TLS echo server a user might pick instead: Node's tls.
// usage: node node_tls_echo.js cert.pem key.pem
const tls = require("tls");
const fs = require("fs");
const server = tls.createServer({ cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) },
  (socket) => { socket.pipe(socket); socket.on("error", () => {}); });
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
