// node's http server with its defaults (keepAliveTimeout 5 s, announced as Keep-Alive: timeout=5): reads the body,
// records the request, answers 200. Usage: node node_app.js PORT (SEEN_FILE in the environment).
'use strict';
const fs = require('fs');
const http = require('http');

const port = Number(process.argv[2]);
const seen = fs.openSync(process.env.SEEN_FILE, 'a');

const server = http.createServer((req, res) => {
  let length = 0;
  req.on('data', (chunk) => { length += chunk.length; });
  req.on('end', () => {
    fs.writeSync(seen, `${req.method} ${req.headers['x-request-id'] || '-'}\n`);
    res.setHeader('Content-Type', 'text/plain');
    res.end(`ok ${length}\n`);
  });
});
server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));
