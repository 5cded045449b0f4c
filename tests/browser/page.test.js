// Pricer's page in real headless Chromium: load, estimate (checked against
// `pricer predict`), range, batch with a bad line, empty and huge input,
// HTML and mixed scripts shown as text, a damaged model, offline reload,
// and no request leaving the page's origin.
//
// Needs: dist/ built by trunk, target/release/pricer, /usr/bin/chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
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
// Like common static hosts it sends an ETag and Last-Modified and answers a
// matching conditional request with 304.
function serve(dir, overrides = {}) {
  const started = new Date(Math.floor(Date.now() / 1000) * 1000 - 60000);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (!url.pathname.startsWith(SUB)) { res.writeHead(404); return res.end(); }
    let rel = decodeURIComponent(url.pathname.slice(SUB.length)) || "index.html";
    let body;
    if (overrides[rel]) body = overrides[rel];
    else {
      const file = path.join(dir, rel);
      if (!file.startsWith(dir) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); return res.end("not found"); }
      body = fs.readFileSync(file);
    }
    const etag = `"${crypto.createHash("sha1").update(body).digest("hex")}"`;
    const headers = { "content-type": TYPES[path.extname(rel)] || "application/octet-stream", etag,
      "last-modified": started.toUTCString() };
    server.requests.push({ path: rel, conditional: Boolean(req.headers["if-none-match"]) });
    if (req.headers["if-none-match"] === etag) { res.writeHead(304, headers); return res.end(); }
    res.writeHead(200, { ...headers, "content-length": body.length });
    res.end(body);
  });
  server.requests = [];
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}${SUB}` })));
}

// `pricer predict` on the same text (as JSONL on stdin: a 1 MB text exceeds argv).
function cliPredict(text, model) {
  const t = text.trimStart();
  const nl = t.indexOf("\n");
  const record = nl < 0 ? { title: t } : { title: t.slice(0, nl), description: t.slice(nl + 1).trim() };
  const out = execFileSync(pricer, ["predict", "--model", model || path.join(dist, "models/default.gguf")],
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
    // What it learnt from, the validation items that joined after the blend was fitted included.
    const trainedOn = await page.evaluate(() =>
      [...document.querySelectorAll("#model-card dt")].find((d) => d.textContent === "Trained on")?.nextElementSibling?.textContent);
    assert.match(trainedOn, /^\d+ items of the data set "all2" \(train\.jsonl\); then the \d+ validation items joined/);

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
    // Rows are named by the file's lines (the header is line 1), in file order.
    const lines = await page.$$eval("#batch-table tbody tr", (trs) => trs.map((t) => Number(t.dataset.line)));
    assert.deepEqual(lines, [2, 3, 4, 5]);
    assert.equal(await page.textContent("#batch-table tr[data-line='3'] td:nth-child(2)"), "<i>Desk lamp</i>, LED");
    const drill = Number(await page.getAttribute("#batch-table tr[data-line='2']", "data-price"));
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

// Estimates `text` and waits for its reasons with the encoder's share measured.
async function explained(page, text) {
  const e = await estimate(page, text);
  await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });
  const words = await page.$$eval("#why li[data-word]", (lis) => lis.map((l) => [l.dataset.word, Number(l.dataset.weight)]));
  const comparables = await page.$$eval("#comparables li", (lis) => lis.map((l) => ({
    title: l.querySelector(".title").textContent, price: Number(l.dataset.price), similarity: Number(l.dataset.similarity) })));
  return { ...e, words: Object.fromEntries(words), comparables };
}

// `pricer predict --explain` on the same text.
function cliExplain(text, model, extra = []) {
  const out = execFileSync(pricer,
    ["predict", "--model", model || path.join(dist, "models/default.gguf"), "--explain", ...extra, text], { encoding: "utf8" });
  return JSON.parse(out.trim());
}

test("every estimate shows comparables and the words that moved it, as the CLI does", async () => {
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    const plain = "Stapler\nA small office stapler.";
    const a = await explained(page, plain);
    // Five comparables, most similar first, each with a price; the same as the CLI's.
    assert.equal(a.comparables.length, 5);
    for (let i = 1; i < 5; i++) assert.ok(a.comparables[i - 1].similarity >= a.comparables[i].similarity);
    for (const c of a.comparables) assert.ok(c.price > 0 && c.title.length > 0, JSON.stringify(c));
    const cli = cliExplain(plain);
    assert.deepEqual(a.comparables.map((c) => c.title), cli.comparables.map((c) => c.title));
    assert.deepEqual(Object.keys(a.words).sort(), cli.words.map((w) => w.label).sort());
    for (const w of cli.words) assert.ok(Math.abs(a.words[w.label] - w.weight) < 2e-3, `${w.label}: ${a.words[w.label]} vs ${w.weight}`);
    const typical = Number(await page.getAttribute("#why", "data-typical"));
    assert.ok(Math.abs(typical - cli.typical) < 0.01 * cli.typical);
    // The words and details alone gave a first estimate, on screen before the
    // full one, equal to the CLI's.
    const firstPrice = Number(await page.getAttribute("#first-shown", "data-price"));
    assert.ok(Math.abs(firstPrice - cli.first) <= 0.005 * cli.first + 0.01, `${firstPrice} vs ${cli.first}`);
    const firstMs = Number(await page.getAttribute("#first-shown", "data-shown-ms"));
    const fullMs = Number(await page.getAttribute("#took", "data-shown-ms"));
    assert.ok(firstMs >= 0 && firstMs <= fullMs, `first on screen after ${firstMs} ms, full after ${fullMs} ms`);
    assert.match(await page.textContent(".why-sum"), /^From \$[\d,.]+ typical to \$[\d,.]+\./);
    // A premium word raises the estimate and is shown as raising it.
    const b = await explained(page, "Stapler Professional\nA small office stapler.");
    assert.ok(b.price > a.price, `${b.price} > ${a.price}`);
    assert.ok(b.words.professional > 0, JSON.stringify(b.words));
    assert.ok(await page.$("#why li.word.up[data-word=professional]"));
  } finally {
    await context.close();
    server.close();
  }
});

test("the page estimates as the user types, once the text rests", async () => {
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    await explained(page, "Stapler\nA small office stapler.");
    const before = Number(await page.getAttribute("#result", "data-id"));
    const typed = "Cordless drill 20V\nTwo batteries and a charger";
    await page.fill("#description", "");
    await page.type("#description", typed, { delay: 15 });
    // No click: one estimate starts when typing pauses, for the whole text.
    await page.waitForFunction((b) => Number(document.querySelector("#result")?.dataset.id) > b, before, { timeout: 30000 });
    await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(Number(await page.getAttribute("#result", "data-id")), before + 1, "one request for the whole typing");
    const shown = Number(await page.getAttribute("#price", "data-price"));
    assert.ok(close(shown, cliPredict(typed).price), `page ${shown} vs CLI`);
    // The time from request to screen is recorded beside the worker's own.
    const ms = Number(await page.getAttribute("#took", "data-shown-ms"));
    assert.ok(ms > 0 && ms < 30000, `${ms}`);
    // Clearing the text starts nothing and shows no hint (that is for a click).
    await page.fill("#description", "");
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(await page.$("#hint"), null);
    assert.equal(Number(await page.getAttribute("#result", "data-id")), before + 1);
  } finally {
    await context.close();
    server.close();
  }
});

// Titles no page should trust: markup, right-to-left text with a bidi
// override, and one far longer than the index keeps.
const HOSTILE = [
  (i) => `<img src=x onerror="window.pwned=1"> Blender ${i} <b>bold</b>`,
  (i) => `خلاط كهربائي \u202eBlender ${i} reversed`,
  (i) => `Blender ${i} ` + "extra long title words ".repeat(20),
];

// A tiny stack (random 2-layer encoder, briefly trained, neighbour index)
// whose training items all carry hostile titles, made with the CLI.
function tinyHostileModel() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-hostile-"));
  const vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "blender", "kettle", "steel", "electric", "for", "the",
    "kitchen", "with", "glass", "jar", "extra", "long", "title", "words", "reversed", "bold", "img", "src", "onerror",
    ...Array.from({ length: 10 }, (_, d) => [String(d), `##${d}`]).flat(), ".", ",", "<", ">", "=", "\"", "/"];
  const id = (t) => vocab.indexOf(t);
  const tokenizer = {
    version: "1.0", truncation: null, padding: null, added_tokens: [],
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "[CLS]": { id: "[CLS]", ids: [id("[CLS]")], tokens: ["[CLS]"] }, "[SEP]": { id: "[SEP]", ids: [id("[SEP]")], tokens: ["[SEP]"] } } },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((w, i) => [w, i])) },
  };
  const tok = path.join(dir, "tokenizer.json");
  fs.writeFileSync(tok, JSON.stringify(tokenizer));
  const records = Array.from({ length: 90 }, (_, i) => JSON.stringify({
    title: HOSTILE[i % 3](i), main_category: "Appliances", price: 20 + (i % 7) * 15,
    description: [`Electric blender for the kitchen with a glass jar, ${i % 5 + 1} speeds.`],
    features: [`Steel blades ${i}`], details: {},
  }));
  const raw = path.join(dir, "raw.jsonl");
  fs.writeFileSync(raw, records.join("\n") + "\n");
  const run = (args) => execFileSync(pricer, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const at = (p) => path.join(dir, p);
  run(["curate", "--input", raw, "--tokenizer", tok, "--max-tokens", "32", "--min-chars", "20", "--out", at("data")]);
  run(["lab", "init-base", "--tokenizer", tok, "--out", at("base")]);
  run(["train", "--kind", "minilm", "--base", at("base"), "--data", at("data"), "--out", at("run"), "--epochs", "1",
    "--batch", "8", "--max-tokens", "32"]);
  run(["export", at("run"), "--out", at("tiny.gguf"), "--knn", "3"]);
  return at("tiny.gguf");
}

test("hostile titles among the comparables are shown as text", async () => {
  const model = tinyHostileModel();
  const { server, url } = await serve(dist, { "models/default.gguf": fs.readFileSync(model) });
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    // One query near each kind of title: its comparables carry that kind.
    const queries = [
      [HOSTILE[0](3), (t) => t.startsWith('<img src=x onerror="window.pwned=1"> Blender') && t.endsWith("<b>bold</b>")],
      [HOSTILE[1](1), (t) => t.includes("\u202eBlender") && t.startsWith("خلاط")],
      [HOSTILE[2](5), (t) => t.startsWith("Blender") && t.endsWith("…") && [...t].length <= 100],
    ];
    for (const [query, looksRight] of queries) {
      const x = await explained(page, query);
      assert.equal(x.comparables.length, 5);
      // Titles the CLI lists from the model's stored ones, character for character, as text. These
      // items are near-copies of each other (similarities within 1e-3), so the browser's float
      // order may swap neighbours 5 and 6: every title must be among the CLI's ten nearest.
      const cli = cliExplain(query, model, ["--neighbours", "10"]).comparables.map((c) => c.title);
      for (const c of x.comparables) assert.ok(cli.includes(c.title), `${c.title} not in ${JSON.stringify(cli)}`);
      assert.ok(x.comparables.some((c) => looksRight(c.title)), JSON.stringify(x.comparables));
    }
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.$("main img"), null);
    assert.equal(await page.$("#comparables b"), null);
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

test("the relaxed-SIMD worker runs where the browser has it, and the plain one gives the same bits", async () => {
  const { server, url } = await serve(dist);
  const texts = [
    "Stainless Steel 12-Cup Programmable Coffee Maker\nThermal carafe, brew strength control, 24-hour timer",
    "Kids Wooden Train Set, 52 pieces\nCompatible with major brands. Ages 3+",
    "USB-C cable",
  ];
  const run = async (plain) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    // An engine without relaxed SIMD: the page's 40-byte probe does not validate.
    if (plain) await page.addInitScript(() => {
      const validate = WebAssembly.validate;
      WebAssembly.validate = (bytes) => (bytes.byteLength === 40 ? false : validate(bytes));
    });
    try {
      await page.goto(url);
      await ready(page);
      const build = await page.evaluate(() => document.documentElement.dataset.worker);
      const prices = [];
      for (const t of texts) prices.push((await estimate(page, t)).price);
      return { build, prices };
    } finally {
      await context.close();
    }
  };
  try {
    const relaxed = await run(false);
    const plain = await run(true);
    assert.equal(relaxed.build, "worker_relaxed", "Chromium has relaxed SIMD");
    assert.equal(plain.build, "worker");
    // Both sum the same integers: the same estimates to the cent, and the CLI's within 0.5%.
    assert.deepEqual(relaxed.prices, plain.prices);
    for (const [i, t] of texts.entries()) {
      const cli = cliPredict(t).price;
      assert.ok(close(relaxed.prices[i], cli), `${relaxed.prices[i]} vs CLI ${cli}`);
    }
  } finally {
    server.close();
  }
});

test("threads for one estimate: isolated from the second load, the same bits as one thread; not isolated, as before", async () => {
  const { server, url } = await serve(dist);
  const long = "Professional 18V cordless combi drill kit with two 4.0Ah lithium-ion batteries\n" +
    Array.from({ length: 12 }, (_, i) => `Feature ${i + 1}: brushless motor, 60 Nm torque, 21 clutch settings, LED work light, metal chuck, belt clip, hard case.`).join(" ");
  const texts = [
    "Stainless Steel 12-Cup Programmable Coffee Maker\nThermal carafe, brew strength control, 24-hour timer",
    long,
    "USB-C cable",
  ];
  const { context, page } = await openPage(`${url}?threads=3`);
  const state = () => page.evaluate(() => ({ isolated: crossOriginIsolated, ...document.documentElement.dataset }));
  const prices = async () => { const p = []; for (const t of texts) p.push((await estimate(page, t)).price); return p; };
  let one;
  try {
    // The first load: no service worker yet, so not isolated: the single-thread build, as before.
    await ready(page);
    let s = await state();
    assert.equal(s.isolated, false);
    assert.equal(s.worker, "worker_relaxed");
    assert.equal(s.estimateThreads, "1");
    one = await prices();

    // From the second load the service worker's headers isolate the page:
    // the threaded build, its pool of 3 (more than this machine's cores, so the split itself is tested).
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });
    await page.reload();
    await ready(page);
    s = await state();
    assert.equal(s.isolated, true, "the service worker's COOP/COEP headers");
    assert.equal(s.worker, "worker_threads", s.threadsFailed);
    assert.equal(s.estimateThreads, "3");
    const three = await prices();
    assert.deepEqual(three, one, "threads split the work, not the sums");
    for (const [i, t] of texts.entries()) {
      const cli = cliPredict(t).price;
      assert.ok(close(three[i], cli), `${three[i]} vs CLI ${cli}`);
    }
    // The reasons still come (the explainer is a single-thread worker).
    await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });

    // ?threads=1: the threaded build on a pool of one, its parts on the worker's own thread.
    await page.goto(`${url}?threads=1`);
    await ready(page);
    s = await state();
    assert.equal(s.worker, "worker_threads", s.threadsFailed);
    assert.equal(s.estimateThreads, "1");
    assert.deepEqual(await prices(), one);

    // ?threads=0 on an isolated page: the single-thread build again.
    await page.goto(`${url}?threads=0`);
    await ready(page);
    s = await state();
    assert.equal(s.isolated, true);
    assert.equal(s.worker, "worker_relaxed");
    assert.equal(s.estimateThreads, "1");
    assert.deepEqual(await prices(), one);

    // One core and no ?threads: the single-thread build (the threaded one on a pool of one is slower).
    await page.addInitScript(() => Object.defineProperty(Navigator.prototype, "hardwareConcurrency", { get: () => 1 }));
    await page.goto(url);
    await ready(page);
    s = await state();
    assert.equal(s.isolated, true);
    assert.equal(s.worker, "worker_relaxed");
    assert.equal(s.estimateThreads, "1");
    assert.equal((await estimate(page, texts[0])).price, one[0]);
  } finally {
    await context.close();
    server.close();
  }

  // A threaded build that cannot start (its wasm damaged on the host): the single-thread build takes over.
  const damaged = await serve(dist, { "threads/worker_threads_bg.wasm": Buffer.from("not wasm") });
  const second = await openPage(damaged.url);
  try {
    await ready(second.page);
    await second.page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });
    await second.page.reload();
    await ready(second.page);
    const d = await second.page.evaluate(() => ({ isolated: crossOriginIsolated, ...document.documentElement.dataset }));
    assert.equal(d.isolated, true);
    assert.equal(d.worker, "worker_relaxed");
    assert.equal(d.estimateThreads, "1");
    assert.ok(d.threadsFailed, "the reason is kept on the page");
    assert.equal((await estimate(second.page, texts[0])).price, one[0]);
  } finally {
    await second.context.close();
    damaged.server.close();
  }
});

test("threads failed and no single-thread worker could start either: the page says so instead of loading forever", async () => {
  const damaged = await serve(dist, { "threads/worker_threads_bg.wasm": Buffer.from("not wasm") });
  const context = await browser.newContext();
  // Once a threaded (module) worker was asked for, the second classic worker
  // (the first is the reasons worker; the second, the single-thread build
  // that would take the threaded one's place) cannot be made.
  await context.addInitScript(() => {
    const Real = window.Worker;
    let threaded = false;
    let classic = 0;
    window.Worker = class extends Real {
      constructor(url, opts) {
        if (opts?.type === "module") threaded = true;
        else if (threaded && ++classic === 2) throw new DOMException("no worker for this test", "SecurityError");
        super(url, opts);
      }
    };
  });
  const page = await context.newPage();
  try {
    await page.goto(damaged.url);
    await ready(page); // not isolated on the first load: no threaded worker, nothing refused
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });
    await page.reload();
    await page.waitForSelector("#status[data-state=error]", { timeout: 60000 });
    assert.equal(await page.evaluate(() => crossOriginIsolated), true);
    const text = await page.textContent("#status");
    assert.match(text, /could not start a worker/);
    assert.match(text, /no worker for this test/);
    assert.ok(await page.evaluate(() => document.documentElement.dataset.threadsFailed), "the threads' reason is kept");
  } finally {
    await context.close();
    damaged.server.close();
  }
});

// A tiny word model made by the CLI (tf-idf ridge on 60 products): another
// model to publish, link or open, whose estimates differ from the default's.
function tinyWordModel(name = "tiny-word") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pricer-${name}-`));
  const kinds = [["Stapler", 9], ["Desk lamp", 30], ["Office chair", 140], ["Standing desk", 420]];
  const lines = Array.from({ length: 60 }, (_, i) => {
    const [title, price] = kinds[i % kinds.length];
    return JSON.stringify({ title: `${title} model ${i}`, main_category: "Office Products",
      description: [`A ${title.toLowerCase()} for the office, variant ${i}.`], price: price * (1 + (i % 5) / 10) });
  });
  const raw = path.join(dir, "items.jsonl");
  fs.writeFileSync(raw, lines.join("\n") + "\n");
  const out = path.join(dir, `${name}.gguf`);
  execFileSync(pricer, ["train", "--kind", "tfidf-ridge", "--data", raw, "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
  return out;
}

const kindOf = (page) => page.evaluate(() =>
  [...document.querySelectorAll("#model-card dt")].find((d) => d.textContent === "Kind")?.nextElementSibling?.textContent);
const sourceOf = (page) => page.evaluate(() => document.querySelector("#model-source")?.dataset.source);

test("a model published later reaches a returning visitor, and offline keeps it", async () => {
  const b = tinyWordModel();
  const overrides = {};
  const { server, url } = await serve(dist, overrides);
  const { context, page } = await openPage(url);
  const text = "Standing desk model 7\nA standing desk for the office.";
  try {
    await ready(page);
    assert.equal(await kindOf(page), "stack");
    assert.match(await sourceOf(page), /^models\/default\.gguf/);
    const a = await estimate(page, text);
    assert.ok(close(a.price, cliPredict(text).price));
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });

    // A returning visitor with the model cached: one conditional request, answered 304.
    server.requests.length = 0;
    await page.reload();
    await ready(page);
    assert.match(await page.textContent("#status"), /cache/);
    const asked = server.requests.filter((r) => r.path === "models/default.gguf");
    assert.deepEqual(asked, [{ path: "models/default.gguf", conditional: true }]);

    // The host publishes model B under the same name: the next visit gets it.
    overrides["models/default.gguf"] = fs.readFileSync(b);
    await page.reload();
    await ready(page);
    assert.equal(await kindOf(page), "tfidf-ridge");
    assert.match(await page.textContent("#model-notice"), /newer model/);
    const got = await estimate(page, text);
    assert.ok(close(got.price, cliPredict(text, b).price), `page ${got.price} vs CLI on B`);
    assert.notEqual(got.price, a.price);

    // A damaged file published over it never replaces the good cached copy.
    overrides["models/default.gguf"] = fs.readFileSync(b).subarray(0, 200);
    await page.reload();
    await ready(page);
    assert.equal(await kindOf(page), "tfidf-ridge");
    assert.match(await page.textContent("#model-notice"), /damaged|truncated/);
    assert.ok(close((await estimate(page, text)).price, got.price));

    // Offline: the page and model B from this browser's copies.
    overrides["models/default.gguf"] = fs.readFileSync(b);
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await page.reload();
    await ready(page);
    assert.equal(await kindOf(page), "tfidf-ridge");
    assert.match(await page.textContent("#status"), /cache/);
    assert.ok(close((await estimate(page, text)).price, got.price));
  } finally {
    await context.close();
    server.close();
  }
});

test("?model= loads a model from the same site and refuses other origins", async () => {
  const b = tinyWordModel();
  const { server, url } = await serve(dist, { "models/b.gguf": fs.readFileSync(b) });
  const origin = new URL(url).origin;
  try {
    const requests = [];
    const { context, page } = await openPage(url + "?model=models/b.gguf", requests);
    try {
      await ready(page);
      assert.equal(await kindOf(page), "tfidf-ridge");
      assert.match(await sourceOf(page), /^models\/b\.gguf \(linked/);
      const text = "Desk lamp model 3\nA desk lamp for the office.";
      assert.ok(close((await estimate(page, text)).price, cliPredict(text, b).price));
      assert.ok(requests.some((u) => u.endsWith("models/b.gguf")));
      assert.ok(!requests.some((u) => u.endsWith("models/default.gguf")), "the default model is not fetched");
    } finally {
      await context.close();
    }
    for (const foreign of ["http://example.com/m.gguf", "//example.com/m.gguf"]) {
      const requests = [];
      const { context, page } = await openPage(url + "?model=" + encodeURIComponent(foreign), requests);
      try {
        await page.waitForSelector("#status[data-state=error]", { timeout: 60000 });
        assert.match(await page.textContent("#load-error"), /another origin/);
        assert.deepEqual(requests.filter((u) => !u.startsWith(origin) && !u.startsWith("blob:")), []);
      } finally {
        await context.close();
      }
    }
  } finally {
    server.close();
  }
});

test("a visitor opens a model file from disk; a damaged or foreign one is refused and the previous stays", async () => {
  const b = tinyWordModel();
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  const text = "Office chair model 2\nAn office chair for the office.";
  try {
    await ready(page);
    await page.setInputFiles("#model-file", b);
    await page.waitForFunction(() => document.querySelector("#model-source")?.dataset.source?.includes("(your file)"));
    assert.equal(await kindOf(page), "tfidf-ridge");
    assert.match(await sourceOf(page), /^tiny-word\.gguf \(your file\)/);
    const mine = await estimate(page, text);
    assert.ok(close(mine.price, cliPredict(text, b).price));

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-bad-"));
    fs.writeFileSync(path.join(dir, "broken.gguf"), fs.readFileSync(b).subarray(0, 300));
    fs.writeFileSync(path.join(dir, "notes.gguf"), "just some text, not a model\n");
    for (const bad of ["broken.gguf", "notes.gguf"]) {
      await page.setInputFiles("#model-file", path.join(dir, bad));
      await page.waitForSelector("#model-file-error", { timeout: 30000 });
      assert.match(await page.textContent("#model-file-error"), /previous model stays: the model file is damaged or not a Pricer model/);
      assert.equal(await page.getAttribute("#status", "data-state"), "ready");
      assert.match(await sourceOf(page), /^tiny-word\.gguf/);
      assert.ok(close((await estimate(page, text)).price, mine.price));
      await page.setInputFiles("#model-file", []);
    }
  } finally {
    await context.close();
    server.close();
  }
});

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

test("the newest request first: estimates clicked back to back never wait for the previous reasons", async () => {
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    const products = [
      "Electric kettle 1.7 litre\nStainless steel, auto shut-off",
      "Gaming mouse, wireless\n16000 DPI sensor, RGB lighting",
      "Yoga mat, extra thick\nNon-slip surface, carrying strap",
      "Cast iron skillet, 12 inch\nPre-seasoned, oven safe",
      "Bluetooth speaker, waterproof\n20 hours of playtime",
      "LEGO City fire station\n540 pieces, ages 6 and up",
      "Acoustic guitar, full size\nSpruce top, with gig bag",
      "Robot vacuum cleaner\nWi-Fi, app control, 120 minutes",
      "Stapler Professional\nA small office stapler.",
      "Cordless drill 20V\nTwo batteries and a charger",
    ];
    const shown = [];
    const own = [];
    for (const t of products) {
      const e = await estimate(page, t); // clicks right after the previous price appeared
      assert.ok(close(e.price, cliPredict(t).price), `${t}: page ${e.price}`);
      await page.waitForSelector("#took[data-shown-ms]"); // set at the frame that paints the price
      shown.push(Number(await page.getAttribute("#took", "data-shown-ms")));
      own.push(Number(await page.getAttribute("#took", "data-millis")));
      // The answer reached the page after the worker's own time, and before the frame.
      const answered = Number(await page.getAttribute("#took", "data-answered-ms"));
      assert.ok(answered >= own.at(-1) && answered <= shown.at(-1) + 1, `answered ${answered}, own ${own.at(-1)}, shown ${shown.at(-1)}`);
    }
    // The last product's reasons still complete, and match the CLI's.
    await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });
    const words = await page.$$eval("#why li[data-word]", (lis) => lis.map((l) => [l.dataset.word, Number(l.dataset.weight)]));
    const cli = Object.fromEntries(cliExplain(products.at(-1)).words.map((w) => [w.label, w.weight]));
    assert.ok(words.length > 0);
    for (const [w, weight] of words) assert.ok(Math.abs(weight - cli[w]) < 2e-3, `${w}: ${weight} vs CLI ${cli[w]}`);
    // Before the reasons moved to a second worker, a click waited for the
    // previous product's six occlusion passes: 926 ms on screen for a 120 ms
    // estimate. The bench (tests/browser/bench.mjs) records the exact ratio.
    // Waiting for them would add six or more passes of about an estimate's
    // time each; the page adds a frame (16.7 ms) and its messages, which for
    // these short products (9 ms estimates on a fast machine) can be 3x the
    // worker's time: so the bound is on what is added.
    const added = median(shown) - median(own);
    assert.ok(added < Math.max(2 * median(own), 40), `click to shown p50 ${median(shown)} ms vs the worker's ${median(own)} ms`);
  } finally {
    await context.close();
    server.close();
  }
});

test("the worker warms up once the model is ready, and a click at that moment goes first", async () => {
  const { server, url } = await serve(dist);
  const text = "Cordless drill 20V\nTwo batteries, a charger and a case";
  // Clicked the moment the page says ready: the warm-up stops for it.
  let { context, page } = await openPage(url);
  try {
    const took = await page.evaluate((t) => new Promise((resolve) => {
      const go = () => {
        const d = document.querySelector("#description");
        d.value = t;
        d.dispatchEvent(new Event("input", { bubbles: true }));
        document.querySelector("#estimate").click();
        const seen = new MutationObserver(() => {
          const p = document.querySelector("#price");
          if (p) { seen.disconnect(); resolve(Number(p.dataset.price)); }
        });
        seen.observe(document.body, { subtree: true, childList: true, attributes: true });
      };
      const isReady = () => document.querySelector("#status")?.dataset.state === "ready";
      if (isReady()) return go();
      const m = new MutationObserver(() => { if (isReady()) { m.disconnect(); go(); } });
      m.observe(document.body, { subtree: true, childList: true, attributes: true });
    }), text);
    assert.ok(close(took, cliPredict(text).price), `page ${took} vs CLI`);
    await page.waitForFunction(() => document.documentElement.dataset.warmUpRuns !== undefined, null, { timeout: 30000 });
    const runs = Number(await page.getAttribute("html", "data-warm-up-runs"));
    assert.ok(runs >= 1 && runs < 4, `the warm-up stopped for the click: ${runs} of 4 runs`);
  } finally {
    await context.close();
  }
  // Left alone: all four runs, and the estimates after them are the model's own.
  ({ context, page } = await openPage(url));
  try {
    await ready(page);
    await page.waitForSelector("html[data-warm-up-runs='4']", { timeout: 30000 });
    assert.ok(Number(await page.getAttribute("html", "data-warm-up-ms")) > 0);
    const e = await estimate(page, text);
    assert.ok(close(e.price, cliPredict(text).price), `page ${e.price} vs CLI`);
  } finally {
    await context.close();
    server.close();
  }
});

test("isolated, a new estimate stops the reasons being measured for the one it replaces, between two layers", async () => {
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  // About 20 words to measure, one encoder pass of ~130 tokens each: seconds of work for the explainer.
  const long = "Professional 18V cordless combi drill kit with two 4.0Ah lithium-ion batteries\n" +
    Array.from({ length: 12 }, (_, i) => `Feature ${i + 1}: brushless motor, 60 Nm torque, 21 clutch settings, LED work light, metal chuck, belt clip, hard case.`).join(" ");
  const next = "Stapler Professional\nA small office stapler.";
  const stopped = () => page.evaluate(() => Number(document.documentElement.dataset.reasonsStopped || 0));
  try {
    await ready(page);
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });
    await page.reload();
    await ready(page);
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, "the service worker's COOP/COEP headers");
    assert.equal(await stopped(), 0);
    // The explainer loads its copy of the model after the worker is ready: on a
    // slow machine a request sent before that waits, and is replaced without a
    // pass to stop. One product's reasons, complete, show it has the model.
    await estimate(page, "Acoustic guitar, full size\nSpruce top, with gig bag");
    await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });
    assert.equal(await stopped(), 0);
    // The explainer measures the long product's reasons in about half a
    // second (seven passes), inside an encoder pass most of that time;
    // between passes a request drops the reasons without a pass to stop.
    // Measured here: a click 0-300 ms after the price stopped a pass in 11
    // tries of 13; from 325 ms on (with Playwright's own time to fill and
    // click) the reasons were done. So a few tries, each soon after the
    // price; one stop shows the mechanism.
    let e;
    for (let tries = 0; tries < 6 && (await stopped()) === 0; tries++) {
      await estimate(page, long);
      await page.waitForTimeout(40);
      e = await estimate(page, next);
      // The stop, if any, is answered before the new product's reasons.
      await page.waitForSelector("#why[data-complete=true]", { timeout: 30000 });
    }
    assert.ok(close(e.price, cliPredict(next).price), `page ${e.price}`);
    // The explainer said so (rather than finishing or failing), and went on
    // with the new product's reasons, which equal the CLI's.
    assert.ok((await stopped()) >= 1, "no pass was stopped in 6 tries");
    const words = await page.$$eval("#why li[data-word]", (lis) => lis.map((l) => [l.dataset.word, Number(l.dataset.weight)]));
    const cli = Object.fromEntries(cliExplain(next).words.map((w) => [w.label, w.weight]));
    assert.deepEqual(words.map(([w]) => w).sort(), Object.keys(cli).sort());
    for (const [w, weight] of words) assert.ok(Math.abs(weight - cli[w]) < 2e-3, `${w}: ${weight} vs CLI ${cli[w]}`);
    // An estimate not replaced keeps its reasons: the same product again, left alone.
    const before = await stopped();
    await estimate(page, long);
    await page.waitForSelector("#why[data-complete=true]", { timeout: 60000 });
    assert.equal(await stopped(), before);
    assert.ok((await page.$$("#why li[data-word]")).length > 0);
  } finally {
    await context.close();
    server.close();
  }
});

test("scripts/build-web.sh --model puts a model file in the page at build time", async () => {
  const b = tinyWordModel("built-in");
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-built-"));
  // The page as the tests build it (wasm-opt -O1), so this takes under a minute after the first build;
  // without the threaded worker (its own build at the shipped opt-level would take minutes; the model is what is checked).
  const index = process.env.PRICER_WEB_INDEX || "index.html";
  execFileSync(path.join(root, "scripts/build-web.sh"), ["--model", b, "--dist", out, "--index", index, "--no-threads"], { stdio: ["ignore", "pipe", "pipe"] });
  assert.ok(!fs.existsSync(path.join(out, "threads")), "--no-threads");
  assert.ok(fs.readFileSync(path.join(out, "models/default.gguf")).equals(fs.readFileSync(b)));
  assert.ok(!fs.existsSync(path.join(out, "models/README.md")), "the shipped model's card is not left beside another model");
  const { server, url } = await serve(out);
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    assert.equal(await kindOf(page), "tfidf-ridge");
    const text = "Office chair model 2\nAn office chair for the office.";
    assert.ok(close((await estimate(page, text)).price, cliPredict(text, b).price));
  } finally {
    await context.close();
    server.close();
  }
});

// A small shop of cheap software, as a seller would export it: prices a
// world apart from the default model's, a row without a price and a duplicate.
function shopCsv() {
  const kinds = [["Photo editor", 4.99], ["PDF converter", 2.99], ["Antivirus", 9.99], ["Music player", 0.99],
    ["Flashcards app", 1.99], ["Chess trainer", 3.49], ["Budget planner", 2.49], ["Font pack", 1.49]];
  const editions = [["Basic", 1], ["Plus", 1.5], ["Pro", 2.2]];
  const rows = ["title,description,price,category"];
  for (const [kind, base] of kinds) {
    for (const [edition, factor] of editions) {
      rows.push(`${kind} ${edition} (download),"A ${kind.toLowerCase()} for Windows and Mac, ${edition} edition, instant download.",${(base * factor).toFixed(2)},Software`);
    }
  }
  rows.push(`Screen recorder Basic (download),"A screen recorder for Windows.",,Software`);
  rows.push(rows[1]);
  return rows.join("\n") + "\n";
}

// `pricer adapt` of the default model to shopCsv(): its JSON report, and
// its estimate for a product of the shop's kind.
function cliAdapted() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-own-"));
  const csv = path.join(dir, "shop.csv");
  fs.writeFileSync(csv, shopCsv());
  const adapted = path.join(dir, "adapted.gguf");
  const cli = JSON.parse(execFileSync(pricer, ["adapt", "--model", path.join(dist, "models/default.gguf"), "--data", csv,
    "--out", adapted, "--json"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim());
  const text = "Photo editor Deluxe (download)\nA photo editor for Windows, deluxe edition, instant download.";
  return { cli, text, want: cliPredict(text, adapted) };
}

test("your own products: the page adapts like pricer adapt, keeps it across visits, and forgets it", async () => {
  const { cli, text, want } = cliAdapted();
  assert.equal(cli.items, 24);
  assert.deepEqual(cli.skipped.map((s) => s.line), [26, 27], "the unpriced row and the duplicate (file lines)");
  assert.ok(cli.after.mae < cli.before.mae, `adapting helps on cheap software: ${JSON.stringify(cli)}`);
  const unadapted = cliPredict(text);

  const { server, url } = await serve(dist);
  const origin = new URL(url).origin;
  const requests = [];
  const { context, page } = await openPage(url, requests);
  try {
    await ready(page);
    // A file with nothing usable: a clear error, no adaptation.
    await page.setInputFiles("#own-items", { name: "empty.csv", mimeType: "text/csv", buffer: Buffer.from("title,price\nNo price here,\n") });
    await page.waitForSelector("#own-items-error", { timeout: 30000 });
    assert.match(await page.textContent("#own-items-error"), /empty\.csv has no usable priced product .*line 2: no price/);
    assert.equal(await page.$("#own-items-status"), null);
    await page.setInputFiles("#own-items", { name: "shop.csv", mimeType: "text/csv", buffer: Buffer.from(shopCsv()) });
    // The page stays usable while the worker reads the products.
    await page.waitForSelector("#own-items-status[data-count]", { timeout: 120000 });
    assert.equal(await page.getAttribute("#own-items-status", "data-count"), "24");
    const before = Number(await page.getAttribute("#own-items-status", "data-mae-before"));
    const after = Number(await page.getAttribute("#own-items-status", "data-mae-after"));
    assert.ok(Math.abs(before - cli.before.mae) <= 0.01 * cli.before.mae, `page ${before} vs CLI ${cli.before.mae}`);
    assert.ok(Math.abs(after - cli.after.mae) <= 0.01 * cli.after.mae + 0.01, `page ${after} vs CLI ${cli.after.mae}`);
    assert.match(await page.textContent("#own-items-skipped"), /shop\.csv:26: no price/);
    let got = await estimate(page, text);
    assert.ok(close(got.price, want.price), `page ${got.price} vs pricer adapt + predict ${want.price}`);
    assert.ok(!close(got.price, unadapted.price), "the adapted estimate differs from the model's own");
    // A product of the shop finds itself among the comparables, marked as the shop's.
    await estimate(page, "Antivirus Pro (download)\nA antivirus for Windows and Mac, Pro edition, instant download.");
    const first = await page.$eval("#comparables li", (li) => ({ yours: li.dataset.yours, title: li.querySelector(".title").textContent }));
    assert.deepEqual(first, { yours: "true", title: "Antivirus Pro (download)" });

    // A later visit finds the adaptation in IndexedDB.
    await page.reload();
    await ready(page);
    await page.waitForSelector("#own-items-status[data-count='24']", { timeout: 30000 });
    got = await estimate(page, text);
    assert.ok(close(got.price, want.price), `after reload: page ${got.price} vs CLI ${want.price}`);

    // Forgotten: gone now and on the next visit.
    await page.click("#own-items-forget");
    await page.waitForSelector("#own-items-status", { state: "detached" });
    got = await estimate(page, text);
    assert.ok(close(got.price, unadapted.price), `forgotten: page ${got.price} vs the model's own ${unadapted.price}`);
    await page.reload();
    await ready(page);
    await page.waitForTimeout(500);
    assert.equal(await page.$("#own-items-status"), null);
    const away = requests.filter((r) => !r.startsWith(origin) && !r.startsWith("blob:") && !r.startsWith("data:"));
    assert.deepEqual(away, [], "nothing leaves the page");
  } finally {
    await context.close();
    server.close();
  }
});

// `model` with the first value of its first tensor made NaN and the tensor
// checksum computed again, as a careful forger would (Python's gguf reads
// the layout; the checksum is CRC32 over the tensors' bytes in name order).
function withNanInFirstTensor(model, out) {
  const python = process.env.PRICER_GGUF_PYTHON || "python3";
  const script = `
import struct, sys, zlib
from gguf import GGUFReader, GGMLQuantizationType
src, dst = sys.argv[1:3]
data = bytearray(open(src, "rb").read())
r = GGUFReader(src)
ts = {t.name: t for t in r.tensors}
name = sorted(ts)[0]
t = ts[name]
if t.tensor_type == GGMLQuantizationType.F32:
    data[t.data_offset:t.data_offset + 4] = struct.pack("<f", float("nan"))
else:
    data[t.data_offset:t.data_offset + 2] = (0x7e00).to_bytes(2, "little")
crc = 0
for n in sorted(ts):
    crc = zlib.crc32(bytes(data[ts[n].data_offset:ts[n].data_offset + ts[n].n_bytes]), crc)
key = b"pricer.tensor_crc32"
at = bytes(data).index(key) + len(key) + 4
data[at:at + 4] = struct.pack("<I", crc)
open(dst, "wb").write(data)
print(name)
`;
  return execFileSync(python, ["-c", script, model, out], { encoding: "utf8" }).trim();
}

test("a model file with NaN in its tensors is refused by name, and the model before stays", async () => {
  const b = tinyWordModel("nan-word");
  const bad = path.join(path.dirname(b), "forged.gguf");
  const tensor = withNanInFirstTensor(b, bad);
  // The CLI refuses it too, naming the tensor, with no price printed.
  let cliErr = "";
  try { execFileSync(pricer, ["predict", "--model", bad, "Stapler"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }); }
  catch (e) { cliErr = String(e.stderr); assert.equal(e.status, 1); }
  assert.match(cliErr, new RegExp(`tensor ${tensor} holds NaN or infinite values`));
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  const text = "Office chair model 2\nAn office chair for the office.";
  try {
    await ready(page);
    const before = await estimate(page, text);
    await page.setInputFiles("#model-file", bad);
    await page.waitForSelector("#model-file-error", { timeout: 30000 });
    assert.match(await page.textContent("#model-file-error"), new RegExp(`previous model stays: .*tensor ${tensor} holds NaN or infinite values`));
    assert.equal(await kindOf(page), "stack");
    assert.match(await sourceOf(page), /^models\/default\.gguf/);
    assert.ok(close((await estimate(page, text)).price, before.price));
  } finally {
    await context.close();
    server.close();
  }
});

test("an answer the page cannot read becomes a message, and the form works again", async () => {
  const { server, url } = await serve(dist);
  const context = await browser.newContext();
  // Every reply the page's first worker sends passes here; when asked, the
  // next estimate's price is made `null`, as JSON writes a NaN.
  await context.addInitScript(() => {
    const desc = Object.getOwnPropertyDescriptor(Worker.prototype, "onmessage");
    Object.defineProperty(Worker.prototype, "onmessage", {
      configurable: true,
      get() { return desc.get.call(this); },
      set(fn) {
        desc.set.call(this, fn && ((ev) => {
          if (window.corruptNext && typeof ev.data === "string" && ev.data.includes('"type":"estimate"')) {
            window.corruptNext = false;
            return fn.call(this, new MessageEvent("message", { data: ev.data.replace(/"price":[-0-9.e+]+/, '"price":null') }));
          }
          return fn.call(this, ev);
        }));
      },
    });
  });
  const page = await context.newPage();
  const text = "Stapler\nA small office stapler.";
  try {
    await page.goto(url);
    await ready(page);
    const good = await estimate(page, text);
    await page.evaluate(() => { window.corruptNext = true; });
    await page.fill("#description", text + " Heavy duty.");
    await page.click("#estimate");
    await page.waitForSelector("#estimate-error", { timeout: 30000 });
    assert.match(await page.textContent("#estimate-error"), /could not read/);
    assert.equal(await page.isDisabled("#estimate"), false, "the Estimate button is usable again");
    assert.ok(close((await estimate(page, text)).price, good.price));
  } finally {
    await context.close();
    server.close();
  }
});

test("a whole file never takes the page hostage: estimates between rows, progress, cancel, a limit and the rest", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-file-"));
  // The default model on 2,000 products: long enough to ask for an estimate, and to cancel, meanwhile.
  const many = path.join(dir, "many.jsonl");
  fs.writeFileSync(many, Array.from({ length: 2000 }, (_, i) =>
    JSON.stringify({ title: `Cordless drill ${i}`, description: "Two batteries and a charger, 20V." })).join("\n") + "\n");
  const { server, url } = await serve(dist);
  const { context, page } = await openPage(url);
  try {
    await ready(page);
    await page.setInputFiles("#batch-file", many);
    await page.waitForFunction(() => Number(document.querySelector("#batch-progress-text")?.dataset.done) > 0, null, { timeout: 60000 });
    assert.equal(await page.getAttribute("#batch-progress-text", "data-total"), "2000");
    const text = "Stapler\nA small office stapler.";
    const e = await estimate(page, text);
    assert.ok(close(e.price, cliPredict(text).price));
    assert.ok(await page.$("#batch-progress-row"), "the estimate came while the file was being priced");
    await page.waitForFunction(() => /left/.test(document.querySelector("#batch-progress-text")?.textContent), null, { timeout: 30000 });
    await page.click("#batch-cancel");
    await page.waitForSelector("#batch-summary[data-cancelled=true]", { timeout: 30000 });
    const left = Number(await page.getAttribute("#batch-summary", "data-left"));
    const shown = (await page.$$("#batch-table tbody tr")).length;
    assert.ok(shown > 0 && left > 0 && shown + left === 2000, `${shown} priced + ${left} left`);
    assert.match(await page.textContent("#batch-summary"), /Cancelled/);
    assert.equal(await page.$("#batch-next"), null);
    assert.equal(await page.$("#batch-progress-row"), null);

    // A file over the stated size is refused before it is read (a sparse file: no bytes written).
    const big = path.join(dir, "big.csv");
    fs.closeSync(fs.openSync(big, "w"));
    fs.truncateSync(big, 60_000_000);
    await page.setInputFiles("#batch-file", big);
    await page.waitForSelector("#batch-error");
    assert.match(await page.textContent("#batch-error"), /big\.csv is 60\.0 MB: the page reads files of up to 50 MB/);
  } finally {
    await context.close();
    server.close();
  }

  // A quick model on 2,003 records (a CRLF file, a bad line among them):
  // the first 2,000, then "Price the next" for the rest, in file order.
  const word = tinyWordModel("many-word");
  const titles = ["=HYPERLINK(\"http://evil.example\",\"x\") lamp", "+1 stapler", "@SUM(A1) chair", "-2 desk"];
  const records = Array.from({ length: 2003 }, (_, i) => i === 2001 ? "not json"
    : JSON.stringify({ title: i < titles.length ? titles[i] : `Stapler model ${i}`, description: "For the office." }));
  const crlf = path.join(dir, "crlf.jsonl");
  fs.writeFileSync(crlf, records.join("\r\n") + "\r\n");
  const quick = await serve(dist, { "models/default.gguf": fs.readFileSync(word) });
  const second = await openPage(quick.url);
  try {
    const p = second.page;
    await ready(p);
    await p.setInputFiles("#batch-file", crlf);
    await p.waitForSelector("#batch-summary", { timeout: 120000 });
    assert.equal(await p.getAttribute("#batch-summary", "data-left"), "3");
    const firstLines = await p.$$eval("#batch-table tbody tr", (trs) => trs.map((t) => Number(t.dataset.line)));
    assert.deepEqual(firstLines, Array.from({ length: 2000 }, (_, i) => i + 1));
    // The download escapes cells a spreadsheet would run as formulas.
    const csv = await p.evaluate(async () => (await fetch(document.querySelector("#batch-download").href)).text());
    assert.match(csv, /^line,title,estimate,low,high,error\n/);
    assert.ok(csv.includes("\n1,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\") lamp\","), csv.slice(0, 300));
    for (const t of ["'+1 stapler", "'@SUM(A1) chair", "'-2 desk"]) assert.ok(csv.includes(`,${t},`), t);
    await p.click("#batch-next");
    await p.waitForSelector("#batch-summary[data-before='2000']", { timeout: 120000 });
    assert.equal(await p.getAttribute("#batch-summary", "data-left"), "0");
    const rest = await p.$$eval("#batch-table tbody tr", (trs) => trs.map((t) => [Number(t.dataset.line), t.className]));
    assert.deepEqual(rest, [[2001, "ok"], [2002, "bad"], [2003, "ok"]]);
    assert.match(await p.textContent("#batch-summary"), /records 2,001 to 2,003\): 2 priced, 1 with errors/);
    assert.equal(await p.$("#batch-next"), null);
  } finally {
    await second.context.close();
    quick.server.close();
  }
});

// A page that counts the workers it starts (`window.workersStarted`): the
// first, the reasons' one, and the extra ones of a pool.
async function countingWorkers() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    const Real = Worker;
    window.workersStarted = 0;
    window.Worker = class extends Real { constructor(...a) { super(...a); window.workersStarted++; } };
  });
  return { context, page: await context.newPage() };
}

test("a file priced by several workers gives the same rows as by one, part after part", async () => {
  const word = tinyWordModel("pool-word");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pricer-pool-"));
  const file = path.join(dir, "many.jsonl");
  const kinds = ["Stapler", "Desk lamp", "Office chair", "Standing desk"];
  fs.writeFileSync(file, Array.from({ length: 2003 }, (_, i) => i % 401 === 7 ? "{broken"
    : JSON.stringify({ title: `${kinds[i % 4]} model ${i}`, description: `For the office, variant ${i % 9}.` })).join("\n") + "\n");
  const { server, url } = await serve(dist, { "models/default.gguf": fs.readFileSync(word) });
  const rowsOf = (page) => page.$$eval("#batch-table tbody tr", (trs) => trs.map((t) => [Number(t.dataset.line), t.className, t.dataset.price ?? null]));
  const price = async (workers) => {
    const { context, page } = await countingWorkers();
    await page.goto(`${url}?workers=${workers}`);
    try {
      await ready(page);
      await page.setInputFiles("#batch-file", file);
      await page.waitForSelector("#batch-summary", { timeout: 120000 });
      const first = await rowsOf(page);
      assert.equal(await page.getAttribute("#batch-summary", "data-left"), "3");
      await page.click("#batch-next");
      await page.waitForSelector("#batch-summary[data-before='2000']", { timeout: 120000 });
      assert.equal(await page.evaluate(() => window.workersStarted), 2 + (workers - 1), `?workers=${workers}`);
      return { first, rest: await rowsOf(page) };
    } finally {
      await context.close();
    }
  };
  try {
    const one = await price(1);
    const three = await price(3);
    assert.equal(one.first.length, 2000);
    assert.deepEqual(one.first.map((r) => r[0]), Array.from({ length: 2000 }, (_, i) => i + 1));
    assert.equal(one.first.filter((r) => r[1] === "bad").length, 5);
    assert.deepEqual(three.first, one.first);
    assert.deepEqual(one.rest.map((r) => r[0]), [2001, 2002, 2003]);
    assert.deepEqual(three.rest, one.rest);
  } finally {
    server.close();
  }
});

test("your own products read by several workers adapt the model exactly as one worker and pricer adapt do", async () => {
  const { cli, text, want } = cliAdapted();
  const { server, url } = await serve(dist);
  const adapt = async (workers) => {
    const { context, page } = await countingWorkers();
    await page.goto(`${url}?workers=${workers}`);
    try {
      await ready(page);
      await page.setInputFiles("#own-items", { name: "shop.csv", mimeType: "text/csv", buffer: Buffer.from(shopCsv()) });
      await page.waitForSelector("#own-items-status[data-count]", { timeout: 120000 });
      // The first worker, the reasons' one, and the extra ones that read a share of the products.
      assert.equal(await page.evaluate(() => window.workersStarted), 2 + (workers - 1), `?workers=${workers}`);
      const status = await page.$eval("#own-items-status", (p) => ({ ...p.dataset }));
      const skipped = await page.textContent("#own-items-skipped");
      return { status, skipped, price: (await estimate(page, text)).price };
    } finally {
      await context.close();
    }
  };
  try {
    const one = await adapt(1);
    const three = await adapt(3);
    assert.deepEqual(three, one, "three workers give what one gives, to the cent");
    assert.equal(three.status.count, String(cli.items));
    assert.ok(Math.abs(Number(three.status.maeBefore) - cli.before.mae) <= 0.01 * cli.before.mae, `${three.status.maeBefore} vs CLI ${cli.before.mae}`);
    assert.ok(Math.abs(Number(three.status.maeAfter) - cli.after.mae) <= 0.01 * cli.after.mae + 0.01, `${three.status.maeAfter} vs CLI ${cli.after.mae}`);
    assert.match(three.skipped, /shop\.csv:26: no price/);
    assert.ok(close(three.price, want.price), `page ${three.price} vs pricer adapt + predict ${want.price}`);
  } finally {
    server.close();
  }
});
