// Express 5 sign-up app for tests/differential.rs: express.json(), express.urlencoded (qs,
// extended) and multer's text-only multipart parser, as an Express app wires them. Every gated
// path has a handler that reads its identifier field the Express way (req.body[field], and
// req.query[field] for apps that fall back to the query), records what it read, and echoes it.
// GET /__reads (called by the test directly, never through the gate) returns and clears the
// record. Binds 127.0.0.1:0 and prints "LISTENING <port>".
import express from 'express';
import multer from 'multer';

const FIELDS = { '/api/sign-up': 'email', '/api/sign-in': 'email', '/api/phone': 'phone', '/api/wallet': 'web3_wallet' };
let reads = [];

const app = express();
app.use((req, res, next) => { res.set('x-app', 'express'); next(); });
app.get('/__reads', (req, res) => { const r = reads; reads = []; res.json(r); });
app.use(express.json());
app.use(express.urlencoded({ extended: true }));
app.use(multer().none());
for (const [path, field] of Object.entries(FIELDS)) {
  app.all(path, (req, res) => {
    const read = {
      handler: path,
      method: req.method,
      url: req.originalUrl,
      reads: { body: req.body?.[field] ?? null, query: req.query?.[field] ?? null },
    };
    reads.push(read);
    res.json(read);
  });
}
app.use((req, res) => res.status(404).json({ error: 'no route', url: req.originalUrl }));
// Parser errors (bad JSON, multer on a file field, ...) answer 400 without reaching a handler.
app.use((err, req, res, _next) => res.status(err.status || 500).json({ error: String(err.message) }));

const server = app.listen(0, '127.0.0.1', () => console.log(`LISTENING ${server.address().port}`));
// The test holds our stdin open; when it ends (the test finished or died), so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
