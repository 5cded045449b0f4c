// Our page's estimate against onnxruntime-web running the same MiniLM-L6
// shape, in the same run of headless Chromium on this machine: warm p50 / p95
// per engine and thread count, and the ratio to the peer's fp32 single-thread
// time (the yardstick). A benchmark, not a test; outside CI.
//
// Needs: dist/ (scripts/build-web.sh), the peer (scripts/fetch-peer.sh).
// Usage: node bench-peer.mjs [RUNS] [ROUNDS]   (PRICER_PLAIN=1: our plain simd128 worker)
// PRICER_CONTROL=DIR: another build of the page (a change's control), its
// workers (single-thread and threaded) measured in the same runs as ours.
// Our page is served cross-origin isolated, as its service worker makes it
// from the second load: `?threads=0` runs the single-thread worker, `?threads=2`
// the threaded one (scripts/build-threads.sh) with a pool of 2.
// Each round opens every engine in its own page, then takes their runs in
// turn (one estimate of each, in a new random order each run, after 100 ms
// of quiet), so a slow minute of a shared machine falls on all of them
// alike; the rows "paired" give the median of the per-run ratios of two engines.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { clickEstimate, shownAfter } from "./shown.mjs";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const peerDir = process.env.PRICER_PEER || path.join(root, ".tools/peer");
const runs = Number(process.argv[2] || 30);
const rounds = Number(process.argv[3] || 2);
// The page's model reads 128 tokens of text plus [CLS] and [SEP].
const TOKENS = 130;
// Runs of every engine before its timed ones: the browser optimises a wasm
// function only after it has run a while, and it went on compiling ours
// for about 20 estimates (2026-12-07), so fewer would time the compiler too.
const WARM_RUNS = 20;
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
window.openPeer = async (model, threads, tokens, warm) => {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", location.href).href;
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  const ids = BigInt64Array.from({ length: tokens }, (_, i) => BigInt(i === 0 ? 101 : i === tokens - 1 ? 102 : 1000 + (i * 37) % 20000));
  const feeds = {};
  for (const name of session.inputNames) {
    const data = name.includes("mask") ? ids.map(() => 1n) : name.includes("type") ? ids.map(() => 0n) : ids;
    feeds[name] = new ort.Tensor("int64", data, [1, tokens]);
  }
  for (let i = 0; i < warm; i++) await session.run(feeds);
  window.stepPeer = async () => {
    const t = performance.now();
    await session.run(feeds);
    return performance.now() - t;
  };
  return { isolated: self.crossOriginIsolated, inputs: session.inputNames };
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

// Our page (or the control's) on `threads`, warmed up; `step` is one
// estimate: the worker's own time and the request to the frame that paints it.
async function openOurs(threads, site = ours) {
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
  let i = 0;
  const step = async () => {
    const before = await page.evaluate(() => document.querySelector("#result")?.dataset.id ?? null);
    await page.fill("#description", product + " " + i++);
    await clickEstimate(page);
    await shownAfter(page, before); // the frame that paints the price, no frames asked
    // The reasons' occlusion runs after the estimate: let it finish, so it never overlaps the next timing.
    await page.waitForSelector("#why[data-complete=true]", { timeout: 60000 });
    const took = await page.evaluate(() => ({ ...document.querySelector("#took").dataset }));
    return { ms: Number(took.millis), shown: Number(took.shownMs) };
  };
  for (let w = 0; w < WARM_RUNS; w++) await step();
  // The worker build the page started (worker_relaxed: int8 products with relaxed SIMD).
  return { step, close: () => context.close(), build: d.worker };
}

async function openPeer(model, threads) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(peer.url);
  await page.waitForFunction(() => window.peerReady === true);
  const r = await page.evaluate(([m, t, n, w]) => window.openPeer(m, t, n, w), [model, threads, TOKENS, WARM_RUNS]);
  if (threads > 1 && !r.isolated) throw new Error("the peer page is not cross-origin isolated: no threads");
  return { step: async () => ({ ms: await page.evaluate(() => window.stepPeer()) }), close: () => context.close() };
}

const q = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
// Between two engines' runs, nothing runs for this long.
const SETTLE_MS = 100;
const int8Peer = fs.existsSync(path.join(peerDir, "minilm-int8.onnx"));
const rows = [];
const paired = [];
for (let round = 1; round <= rounds; round++) {
  // Every engine of the round, opened once: [name, threads, opener].
  const engines = [["ours", 1, () => openOurs(0)]];
  // The threaded build needs relaxed SIMD: none with PRICER_PLAIN.
  if (!process.env.PRICER_PLAIN) engines.push(["ours", 2, () => openOurs(2)]);
  if (control) {
    engines.push(["control", 1, () => openOurs(0, control)]);
    if (!process.env.PRICER_PLAIN) engines.push(["control", 2, () => openOurs(2, control)]);
  }
  engines.push(["fp32", 1, () => openPeer("./minilm-fp32.onnx", 1)], ["fp32", 2, () => openPeer("./minilm-fp32.onnx", 2)]);
  // The true int8 peer (MatMulInteger, fetch-peer.sh), when made.
  if (int8Peer) engines.push(["int8", 1, () => openPeer("./minilm-int8.onnx", 1)], ["int8", 2, () => openPeer("./minilm-int8.onnx", 2)]);
  const open = [];
  for (const [name, threads, opener] of engines) open.push({ name, threads, ...(await opener()), ms: [], shown: [] });
  // xorshift32, seeded by the round: the same orders on every machine.
  let seed = round;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };
  for (let run = 0; run < runs; run++) {
    // A new order each run, so no engine always follows the same one.
    const order = open.map((e) => [random(), e]).sort((a, b) => a[0] - b[0]).map(([, e]) => e);
    for (const e of order) {
      // Idle first: a peer's threads may spin a while after its run.
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const r = await e.step();
      e.ms.push(r.ms);
      if (r.shown !== undefined) e.shown.push(r.shown);
    }
  }
  for (const e of open) await e.close();
  const get = (name, threads) => open.find((e) => e.name === name && e.threads === threads);
  const base = q(get("fp32", 1).ms, 0.5);
  const label = (e) => ({
    ours: `Pricer (${e.build}), estimate in the worker`,
    control: `control ${path.basename(process.env.PRICER_CONTROL || "")}, estimate in the worker`,
    fp32: "onnxruntime-web 1.30 fp32",
    int8: "onnxruntime-web 1.30 int8",
  })[e.name];
  for (const e of open) {
    rows.push([round, label(e), e.threads, q(e.ms, 0.5), q(e.ms, 0.95), q(e.ms, 0.5) / base]);
    // The whole way: from the click's request to the frame that paints the price.
    if (e.name === "ours") rows.push([round, `Pricer (${e.build}), request to the price on screen (page)`, e.threads, q(e.shown, 0.5), q(e.shown, 0.95), q(e.shown, 0.5) / base]);
  }
  // Paired: the median over runs of one engine's time over another's in the same run.
  const pairs = [[["ours", 2], ["int8", 2]], [["ours", 1], ["int8", 1]], [["ours", 1], ["control", 1]], [["ours", 2], ["control", 2]]];
  for (const [[a, ta], [b, tb]] of pairs) {
    const ea = get(a, ta), eb = get(b, tb);
    if (ea && eb) paired.push([round, `${label(ea)} / ${label(eb)}`, `${ta} / ${tb}`, q(ea.ms.map((x, i) => x / eb.ms[i]), 0.5)]);
  }
}
await browser.close();
ours.server.close();
control?.server.close();
peer.server.close();

console.log(`Chromium ${browser.version()}, ${TOKENS} tokens, batch 1, ${runs} timed runs each after ${WARM_RUNS} untimed, engines taken in turn run by run, in a random order, ${rounds} rounds`);
console.log("| round | engine | threads | p50 | p95 | p50 / peer fp32 1 thread |");
console.log("| ---: | --- | ---: | ---: | ---: | ---: |");
for (const [r, e, t, p50, p95, ratio] of rows) {
  console.log(`| ${r} | ${e} | ${t} | ${p50.toFixed(0)} ms | ${p95.toFixed(0)} ms | ${ratio.toFixed(2)} |`);
}
if (paired.length) {
  console.log("\nPaired, run by run (median of the per-run ratios; below 1: the first is faster):");
  console.log("| round | engines | threads | median ratio |");
  console.log("| ---: | --- | ---: | ---: |");
  for (const [r, e, t, ratio] of paired) console.log(`| ${r} | ${e} | ${t} | ${ratio.toFixed(2)} |`);
}
