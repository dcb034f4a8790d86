// Baseline: the least a line server can do, on Node.js. Same replies as echo.py: every line
// back behind the same 16-byte prefix. Usage: node echo.js [port]; prints the port when ready.
"use strict";
const net = require("net");

const PREFIX = Buffer.from("AT Echo +0.0000 ");

const server = net.createServer((socket) => {
  let pending = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    const data = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    const out = [];
    let start = 0;
    let nl;
    while ((nl = data.indexOf(10, start)) !== -1) {
      out.push(PREFIX, data.subarray(start, nl + 1));
      start = nl + 1;
    }
    pending = data.subarray(start);
    // One write per chunk read: what the event loop would batch anyway.
    if (out.length) socket.write(Buffer.concat(out));
  });
  socket.on("error", () => socket.destroy());
});

server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
