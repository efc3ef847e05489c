// The local service behind the tunnel in the end-to-end tests: Node's own http server, so the
// origin shares no code with what is under test. Listens on 127.0.0.1 on a free port (or the one
// given first) and prints "listening <port>" once ready. A second argument sets the keep-alive
// timeout in ms (Node's default is 5000), to test local idle timeouts.
//
//   GET  /hello              "hello"
//   POST /echo               the request body, streamed back (chunked)
//   POST /digest             {"bytes": N, "sha256": hex} of the request body, once it is all read
//   GET  /bytes?n=N          N bytes of a repeating pattern, with Content-Length
//   GET  /stream?count=C&ms=M  C chunks "chunk <i>\n", one every M ms (chunked)
//   GET  /headers            the request headers as JSON
//   GET  /slow?ms=M          "slow" after M ms
//   GET  /close              "bye" with Connection: close
//   GET  /stats              {"connections": <connections accepted so far>}
//   Upgrade: websocket       echoes every text/binary frame back
const http = require('http');
const crypto = require('crypto');

const PATTERN = Buffer.alloc(65536);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % 251;

// An upload's proof: unlike /echo it answers after the whole body, so a visitor that sends
// everything before it reads (python-requests) needs no buffer as large as the body.
function digest(req, res) {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  req.on('data', (piece) => { hash.update(piece); bytes += piece.length; });
  req.on('end', () => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') }));
  });
}

function writeBytes(res, n) {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': n });
  let left = n;
  const pump = () => {
    while (left > 0) {
      const piece = left >= PATTERN.length ? PATTERN : PATTERN.subarray(0, left);
      left -= piece.length;
      if (!res.write(piece)) return res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

function stream(res, count, ms) {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  let i = 0;
  const tick = () => {
    if (i === count) return res.end();
    res.write(`chunk ${i++}\n`);
    setTimeout(tick, ms);
  };
  tick();
}

let connections = 0;

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://origin');
  } catch (err) {   // a target Node's parser took but URL cannot (the fuzz test sends such)
    res.statusCode = 400;
    return res.end('bad target');
  }
  const q = (name, dflt) => Number(url.searchParams.get(name) || dflt);
  switch (url.pathname) {
    case '/hello': return res.end('hello');
    case '/echo': return req.pipe(res);
    case '/digest': return digest(req, res);
    case '/bytes': return writeBytes(res, q('n', 1024));
    case '/stream': return stream(res, q('count', 5), q('ms', 200));
    case '/headers':
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }));
    case '/slow': return setTimeout(() => res.end('slow'), q('ms', 1000));
    case '/stats':
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ connections }));
    case '/close':
      res.setHeader('Connection', 'close');
      return res.end('bye');
    default:
      res.statusCode = 404;
      return res.end('no such path');
  }
});

server.on('connection', () => { connections++; });

// A minimal WebSocket echo: handshake, then unmask each client frame and send it back unmasked.
server.on('upgrade', (req, socket) => {
  const key = req.headers['sec-websocket-key'];
  const accept = crypto.createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = Buffer.alloc(0);
  socket.on('data', (data) => {
    buf = Buffer.concat([buf, data]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
      if (buf.length < at + 4 + len) return;
      const mask = buf.subarray(at, at + 4);
      const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < len; i++) payload[i] ^= mask[i % 4];
      buf = buf.subarray(at + 4 + len);
      if (opcode === 8) { socket.end(); return; }
      let header;
      if (len < 126) header = Buffer.from([0x80 | opcode, len]);
      else if (len < 65536) { header = Buffer.alloc(4); header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(len, 2); }
      else { header = Buffer.alloc(10); header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(len), 2); }
      socket.write(Buffer.concat([header, payload]));
    }
  });
  socket.on('error', () => {});
});

if (process.argv[3]) server.keepAliveTimeout = Number(process.argv[3]);

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
