// The page's files (dist/) over HTTP on localhost for the benchmarks, with
// the ETag static hosts send, so a returning visit's model check is a 304.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css", ".svg": "image/svg+xml" };

/** Serves `dist` on a free port; resolves to { server, url }. `isolated`:
 * with the COOP/COEP headers (as the page's service worker adds them). */
export async function serveDist(dist, isolated = false) {
  const iso = isolated ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" } : {};
  const server = http.createServer((req, res) => {
    let p = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (p.endsWith("/")) p += "index.html";
    const f = path.join(dist, p);
    if (!f.startsWith(dist) || !fs.existsSync(f)) { res.writeHead(404); return res.end(); }
    const body = fs.readFileSync(f);
    const etag = `"${fs.statSync(f).size}-${fs.statSync(f).mtimeMs}"`;
    if (req.headers["if-none-match"] === etag) { res.writeHead(304, { ...iso, etag }); return res.end(); }
    res.writeHead(200, { ...iso, "content-type": TYPES[path.extname(f)] || "application/octet-stream", "content-length": body.length, etag });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}
