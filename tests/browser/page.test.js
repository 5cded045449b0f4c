// Pricer's page in real headless Chromium: load, estimate (checked against
// `pricer predict`), range, batch with a bad line, empty and huge input,
// HTML and mixed scripts shown as text, a damaged model, offline reload,
// and no request leaving the page's origin.
//
// Needs: dist/ built by trunk, target/release/pricer, /usr/bin/chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const root = path.resolve(import.meta.dirname, "../..");
const dist = process.env.PRICER_DIST || path.join(root, "dist");
const pricer = process.env.PRICER_BIN || path.join(root, "target/release/pricer");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const SUB = "/some/dir/"; // served under a sub-path: every URL must be relative

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css",
  ".svg": "image/svg+xml", ".gguf": "application/octet-stream", ".md": "text/markdown" };

// A static server for `dir` under SUB; `overrides` maps a path to other bytes.
function serve(dir, overrides = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (!url.pathname.startsWith(SUB)) { res.writeHead(404); return res.end(); }
    let rel = decodeURIComponent(url.pathname.slice(SUB.length)) || "index.html";
    if (overrides[rel]) { res.writeHead(200, { "content-type": TYPES[path.extname(rel)] || "application/octet-stream", "content-length": overrides[rel].length }); return res.end(overrides[rel]); }
    const file = path.join(dir, rel);
    if (!file.startsWith(dir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); return res.end("not found"); }
    const body = fs.readFileSync(file);
    res.writeHead(200, { "content-type": TYPES[path.extname(file)] || "application/octet-stream", "content-length": body.length });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}${SUB}` })));
}

// `pricer predict` on the same text (as JSONL on stdin: a 1 MB text exceeds argv).
function cliPredict(text) {
  const t = text.trimStart();
  const nl = t.indexOf("\n");
  const record = nl < 0 ? { title: t } : { title: t.slice(0, nl), description: t.slice(nl + 1).trim() };
  const out = execFileSync(pricer, ["predict", "--model", path.join(dist, "models/default.gguf")],
    { input: JSON.stringify(record) + "\n", encoding: "utf8", maxBuffer: 1 << 20 });
  return JSON.parse(out.trim());
}

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});
after(async () => { await browser?.close(); });

async function openPage(url, requests) {
  const context = await browser.newContext();
  const page = await context.newPage();
  context.on("request", (r) => requests?.push(r.url()));
  await page.goto(url);
  return { context, page };
}

const ready = (page) => page.waitForSelector("#status[data-state=ready]", { timeout: 60000 });

async function estimate(page, text) {
  await page.fill("#description", text);
  const shown = await page.$("#result");
  const before = shown ? await shown.getAttribute("data-id") : null;
  await page.click("#estimate");
  await page.waitForFunction((b) => { const r = document.querySelector("#result"); return r && r.dataset.id !== b; }, before, { timeout: 30000 });
  const price = Number(await page.getAttribute("#price", "data-price"));
  const low = Number(await page.getAttribute("#range", "data-low"));
  const high = Number(await page.getAttribute("#range", "data-high"));
  return { price, low, high };
}

function close(a, b) { return Math.abs(a - b) <= 0.005 * Math.max(Math.abs(b), 0.01); }

test("the page prices products like the CLI, privately, and survives bad input", async () => {
  const { server, url } = await serve(dist);
  const origin = new URL(url).origin;
  const requests = [];
  const { context, page } = await openPage(url, requests);
  try {
    await ready(page);
    // The model card comes from the file: metrics and a scatter for each test split.
    const splits = await page.$$eval("#test-metrics thead th[data-split]", (ths) => ths.map((t) => t.dataset.split));
    assert.deepEqual(splits, ["catalog", "course"], "the default model is measured on both test splits");
    const mae = await page.$$eval("#test-metrics tr[data-metric=mae] td", (tds) => tds.map((t) => t.textContent));
    for (const m of mae) assert.match(m, /^\$[\d,]+\.\d\d$/);
    for (const split of splits) {
      const points = (await page.$$(`.scatter[data-split=${split}] circle`)).length;
      assert.ok(points > 50, `the ${split} scatter has its test items (${points})`);
    }

    // An example product: same estimate as `pricer predict`, inside its range.
    await page.click("button.example >> nth=2");
    await page.waitForSelector("#price");
    const text = await page.inputValue("#description");
    const shown = Number(await page.getAttribute("#price", "data-price"));
    const cli = cliPredict(text);
    assert.ok(close(shown, cli.price), `page ${shown} vs CLI ${cli.price}`);
    assert.match(await page.textContent("#price"), /^\$[\d,]+\.\d\d$/);
    const low = Number(await page.getAttribute("#range", "data-low"));
    const high = Number(await page.getAttribute("#range", "data-high"));
    assert.ok(low <= shown && shown <= high, `${low} <= ${shown} <= ${high}`);

    // Is it a deal?
    await page.fill("#listed", String((shown * 0.5).toFixed(2)));
    await estimate(page, text);
    assert.match(await page.textContent("#deal"), /under the estimate/);

    // Empty input: a hint, no estimate.
    await page.fill("#description", "   \n  ");
    await page.click("#estimate");
    await page.waitForSelector("#hint");
    assert.equal(await page.$("#price"), null);

    // A 1 MB paste: prepared exactly as the CLI does, with a note.
    const huge = "Industrial shelving unit, steel\n" + "heavy duty rack with five shelves ".repeat(30000);
    const h = await estimate(page, huge);
    assert.ok(close(h.price, cliPredict(huge).price), `huge: page ${h.price}`);
    await page.waitForSelector("#truncated");

    // HTML, emoji, CJK and right-to-left text are shown as text, never run as HTML.
    const odd = "<img src=x onerror=\"window.pwned=1\"> 鍋 🍳 مقلاة\n<b>bold</b> & more";
    const o = await estimate(page, odd);
    assert.ok(close(o.price, cliPredict(odd).price));
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.$("main img"), null);

    // Batch: a CSV with a bad line; the rest are priced.
    const csv = "title,description,price\n" +
      "Cordless drill 20V,Two batteries and a charger,\n" +
      "\"<i>Desk lamp</i>, LED\",Dimmable,25\n" +
      "Broken line with,too,many,fields\n" +
      "Electric kettle,1.7 litre stainless steel,\n";
    const file = path.join(os.tmpdir(), `pricer-batch-${process.pid}.csv`);
    fs.writeFileSync(file, csv);
    await page.setInputFiles("#batch-file", file);
    await page.waitForSelector("#batch-table", { timeout: 60000 });
    assert.match(await page.textContent("#batch-summary"), /3 priced, 1 with errors/);
    const bad = await page.textContent("#batch-table tr.bad");
    assert.match(bad, /^4/);
    assert.match(bad, /expected 3 fields, found 4/);
    assert.equal(await page.textContent("#batch-table tr[data-line='2'] td:nth-child(2)"), "<i>Desk lamp</i>, LED");
    const drill = Number(await page.getAttribute("#batch-table tr[data-line='1']", "data-price"));
    assert.ok(close(drill, cliPredict("Cordless drill 20V\nTwo batteries and a charger").price));
    assert.ok((await page.getAttribute("#batch-download", "href")).startsWith("blob:"));

    // Privacy: every request of the session stayed on the page's origin.
    const off = requests.filter((u) => !u.startsWith(origin) && !u.startsWith("blob:") && !u.startsWith("data:"));
    assert.deepEqual(off, []);
    assert.ok(requests.some((u) => u.endsWith("models/default.gguf")));

    // Offline: with the server gone, a reload opens the app and the cached model.
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null || navigator.serviceWorker.ready.then(() => true), null, { timeout: 20000 });
    await new Promise((r) => setTimeout(r, 500));
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await page.reload();
    await ready(page);
    assert.match(await page.textContent("#status"), /cache/);
    const again = await estimate(page, text);
    assert.ok(close(again.price, shown));
  } finally {
    await context.close();
    server.close();
  }
});

test("a damaged model file shows a clear error and a retry that recovers", async () => {
  const good = fs.readFileSync(path.join(dist, "models/default.gguf"));
  const overrides = { "models/default.gguf": good.subarray(0, Math.floor(good.length / 2)) };
  const { server, url } = await serve(dist, overrides);
  const { context, page } = await openPage(url);
  try {
    await page.waitForSelector("#status[data-state=error]", { timeout: 60000 });
    assert.match(await page.textContent("#load-error"), /damaged|truncated/);
    assert.ok(await page.isDisabled("#estimate"));
    delete overrides["models/default.gguf"];
    await page.click("#retry");
    await ready(page);
    await estimate(page, "Stapler\nA small office stapler.");
  } finally {
    await context.close();
    server.close();
  }
});

test("a missing model file says so", async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-dist-"));
  for (const f of fs.readdirSync(dist)) if (f !== "models") fs.cpSync(path.join(dist, f), path.join(empty, f), { recursive: true });
  const { server, url } = await serve(empty);
  const { context, page } = await openPage(url);
  try {
    await page.waitForSelector("#status[data-state=error]", { timeout: 60000 });
    assert.match(await page.textContent("#load-error"), /HTTP 404/);
    assert.ok(await page.$("#retry"));
  } finally {
    await context.close();
    server.close();
  }
});
