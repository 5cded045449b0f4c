// Our page's estimate against onnxruntime-web running the same MiniLM-L6
// shape, in the same run of headless Chromium on this machine: warm p50 / p95
// per engine and thread count, and the ratio to the peer's fp32 single-thread
// time (the yardstick). A benchmark, not a test; outside CI.
//
// Needs: dist/ (scripts/build-web.sh), the peer (scripts/fetch-peer.sh).
// Usage: node bench-peer.mjs [RUNS] [ROUNDS]   (PRICER_PLAIN=1: our plain simd128 worker)
// PRICER_CONTROL=DIR: another build of the page (a change's control), its
// workers (single-thread and threaded) measured in the same rounds, right
// after ours.
// Our page is served cross-origin isolated, as its service worker makes it
// from the second load: `?threads=0` runs the single-thread worker, `?threads=2`
// the threaded one (scripts/build-threads.sh) with a pool of 2.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { shownAfter } from "./shown.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const peerDir = process.env.PRICER_PEER || path.join(root, ".tools/peer");
const runs = Number(process.argv[2] || 30);
const rounds = Number(process.argv[3] || 2);
// The page's model reads 128 tokens of text plus [CLS] and [SEP].
const TOKENS = 130;
if (!fs.existsSync(path.join(peerDir, "minilm-fp32.onnx"))) {
  console.error(`no peer in ${peerDir}: run scripts/fetch-peer.sh first`);
  process.exit(2);
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
  ".css": "text/css", ".svg": "image/svg+xml" };

// A static server for `dir`; `isolated` adds the headers wasm threads need.
function serve(dir, isolated, extra = {}) {
  const server = http.createServer((req, res) => {
    let p = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (p.endsWith("/")) p += "index.html";
    const headers = isolated ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" } : {};
    if (extra[p]) {
      res.writeHead(200, { ...headers, "content-type": "text/html" });
      return res.end(extra[p]);
    }
    const f = path.join(dir, p);
    if (!f.startsWith(dir) || !fs.existsSync(f) || fs.statSync(f).isDirectory()) { res.writeHead(404); return res.end(); }
    const body = fs.readFileSync(f);
    res.writeHead(200, { ...headers, "content-type": TYPES[path.extname(f)] || "application/octet-stream", "content-length": body.length });
    res.end(body);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, url: `http://127.0.0.1:${server.address().port}/` })));
}

// The peer: one session of the ONNX model, batch 1, TOKENS tokens.
const PEER_PAGE = `<!DOCTYPE html><meta charset="utf-8"><script type="module">
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
window.runPeer = async (model, threads, tokens, runs) => {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  const ids = BigInt64Array.from({ length: tokens }, (_, i) => BigInt(i === 0 ? 101 : i === tokens - 1 ? 102 : 1000 + (i * 37) % 20000));
  const feeds = {};
  for (const name of session.inputNames) {
    const data = name.includes("mask") ? ids.map(() => 1n) : name.includes("type") ? ids.map(() => 0n) : ids;
    feeds[name] = new ort.Tensor("int64", data, [1, tokens]);
  }
  for (let i = 0; i < 3; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    times.push(performance.now() - t);
  }
  await session.release();
  return { times, isolated: self.crossOriginIsolated, inputs: session.inputNames };
};
window.peerReady = true;
</script>`;

// A product long enough to fill the model's 128-token budget.
const product = "Stainless Steel 12-Cup Programmable Coffee Maker with Thermal Carafe\n" +
  "Brew up to 12 cups of hot coffee with this programmable coffee maker. The double-wall stainless steel thermal carafe keeps coffee hot for hours without a hot plate. " +
  "Features a 24-hour programmable timer, brew strength control, a pause-and-serve function, and a reusable gold-tone filter. " +
  "Easy-to-read backlit display with digital clock. Dishwasher-safe parts. Brand: Acme Home. Item weight: 7.5 pounds. " +
  "Includes a measuring scoop, a water window on the side and an automatic shut-off after two hours for peace of mind in a busy kitchen.";

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"] });
const ours = await serve(dist, true);
const control = process.env.PRICER_CONTROL ? await serve(path.resolve(process.env.PRICER_CONTROL), true) : null;
const peer = await serve(peerDir, true, { "/index.html": PEER_PAGE });

// The worker build the page started (worker_relaxed: int8 products with relaxed SIMD).
let build = "?";
async function runOurs(threads, site = ours) {
  const context = await browser.newContext();
  const page = await context.newPage();
  // PRICER_PLAIN=1: as in a browser without relaxed SIMD (the page's probe fails), the plain simd128 worker.
  if (process.env.PRICER_PLAIN) await page.addInitScript(() => {
    const validate = WebAssembly.validate;
    WebAssembly.validate = (bytes) => (bytes.byteLength === 40 ? false : validate(bytes));
  });
  await page.goto(`${site.url}?threads=${threads}`);
  await page.waitForSelector("#status[data-state=ready]", { timeout: 120000 });
  const d = await page.evaluate(() => ({ ...document.documentElement.dataset }));
  if (Number(d.estimateThreads) !== Math.max(threads, 1)) throw new Error(`asked ${threads} threads, the worker has ${d.estimateThreads} (${d.threadsFailed ?? d.worker})`);
  build = d.worker;
  const times = [];
  const shown = [];
  for (let i = -3; i < runs; i++) {
    const before = await page.evaluate(() => document.querySelector("#result")?.dataset.id ?? null);
    await page.fill("#description", product + " " + i);
    await page.click("#estimate");
    await shownAfter(page, before); // the frame that paints the price, no frames asked
    // The reasons' occlusion runs after the estimate: let it finish, so it never overlaps the next timing.
    await page.waitForSelector("#why[data-complete=true]", { timeout: 60000 });
    if (i >= 0) {
      const took = await page.evaluate(() => ({ ...document.querySelector("#took").dataset }));
      times.push(Number(took.millis));
      shown.push(Number(took.shownMs));
    }
  }
  await context.close();
  return { times, shown };
}

async function runPeer(model, threads) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(peer.url);
  await page.waitForFunction(() => window.peerReady === true);
  const r = await page.evaluate(([m, t, n, k]) => window.runPeer(m, t, n, k), [model, threads, TOKENS, runs]);
  await context.close();
  if (threads > 1 && !r.isolated) throw new Error("the peer page is not cross-origin isolated: no threads");
  return r.times;
}

const q = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const rows = [];
for (let round = 1; round <= rounds; round++) {
  const { times: o, shown: os } = await runOurs(0);
  const ob = build;
  // The threaded build needs relaxed SIMD: none with PRICER_PLAIN.
  const { times: o2, shown: os2 } = process.env.PRICER_PLAIN ? {} : await runOurs(2);
  const ob2 = build;
  const c1 = control ? (await runOurs(0, control)).times : null;
  const c2 = control && !process.env.PRICER_PLAIN ? (await runOurs(2, control)).times : null;
  const p1 = await runPeer("./minilm-fp32.onnx", 1);
  const p2 = await runPeer("./minilm-fp32.onnx", 2);
  const base = q(p1, 0.5);
  rows.push([round, `Pricer (${ob}), estimate in the worker`, 1, q(o, 0.5), q(o, 0.95), q(o, 0.5) / base]);
  if (o2) rows.push([round, `Pricer (${ob2}), estimate in the worker`, 2, q(o2, 0.5), q(o2, 0.95), q(o2, 0.5) / base]);
  // The whole way: from the click's request to the frame that paints the price.
  rows.push([round, `Pricer (${ob}), request to the price on screen (page)`, 1, q(os, 0.5), q(os, 0.95), q(os, 0.5) / base]);
  if (os2) rows.push([round, `Pricer (${ob2}), request to the price on screen (page)`, 2, q(os2, 0.5), q(os2, 0.95), q(os2, 0.5) / base]);
  const controlRow = (times, threads) =>
    rows.push([round, `control ${path.basename(process.env.PRICER_CONTROL)}, estimate in the worker`, threads, q(times, 0.5), q(times, 0.95), q(times, 0.5) / base]);
  if (c1) controlRow(c1, 1);
  if (c2) controlRow(c2, 2);
  rows.push([round, "onnxruntime-web 1.30 fp32", 1, base, q(p1, 0.95), 1]);
  rows.push([round, "onnxruntime-web 1.30 fp32", 2, q(p2, 0.5), q(p2, 0.95), q(p2, 0.5) / base]);
  // The true int8 peer (MatMulInteger, fetch-peer.sh), when made.
  if (fs.existsSync(path.join(peerDir, "minilm-int8.onnx"))) {
    for (const threads of [1, 2]) {
      const p = await runPeer("./minilm-int8.onnx", threads);
      rows.push([round, "onnxruntime-web 1.30 int8", threads, q(p, 0.5), q(p, 0.95), q(p, 0.5) / base]);
    }
  }
}
await browser.close();
ours.server.close();
control?.server.close();
peer.server.close();

console.log(`Chromium ${browser.version()}, ${TOKENS} tokens, batch 1, ${runs} warm runs each, ${rounds} rounds`);
console.log("| round | engine | threads | p50 | p95 | p50 / peer fp32 1 thread |");
console.log("| ---: | --- | ---: | ---: | ---: | ---: |");
for (const [r, e, t, p50, p95, ratio] of rows) {
  console.log(`| ${r} | ${e} | ${t} | ${p50.toFixed(0)} ms | ${p95.toFixed(0)} ms | ${ratio.toFixed(2)} |`);
}
