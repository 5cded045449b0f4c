// Pricer's service worker: keeps the app's own files so the page opens
// offline after the first visit, and makes the page cross-origin isolated
// where the threaded worker was built (threads/): static hosts cannot send
// the COOP/COEP headers that memory shared between workers needs, so this
// worker adds them to what it serves (from the page's second load). The
// model file is cached by the app's worker (Cache Storage
// "pricer-models-v1"), not here.
const SHELL = "pricer-shell-v1";
const THREADS = ["threads/worker_threads.js", "threads/worker_threads_bg.wasm"];

// Whether this site has the threaded build (asked once per start of this
// worker; offline, whether it was kept).
let threadsBuilt;
function hasThreads() {
  threadsBuilt ??= fetch(THREADS[0], { method: "HEAD", cache: "no-cache" }).then(
    (r) => r.ok,
    () => caches.match(THREADS[0]).then(Boolean)
  );
  return threadsBuilt;
}

async function precache() {
  const cache = await caches.open(SHELL);
  const index = await fetch("./", { cache: "no-cache" });
  const html = await index.clone().text();
  await cache.put("./", index);
  const urls = new Set(["worker.js", "worker_bg.wasm", "worker_relaxed.js", "worker_relaxed_bg.wasm"]);
  for (const m of html.matchAll(/(?:src|href)="([^"#?]+)"/g)) {
    if (!m[1].includes("//") && !m[1].endsWith(".gguf")) urls.add(m[1]);
  }
  if (await hasThreads()) THREADS.forEach((u) => urls.add(u));
  await cache.addAll([...urls]);
}

// The same response with the headers that make a page (and its workers)
// cross-origin isolated; every file here is the site's own.
function isolated(resp) {
  if (resp.type === "error" || resp.type === "opaque" || resp.status === 0) return resp;
  const headers = new Headers(resp.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(resp.body, { status: resp.status, statusText: resp.statusText, headers });
}

self.addEventListener("install", (e) => e.waitUntil(precache().then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

// Network first, so a new version shows at once; the cache when offline.
self.addEventListener("fetch", (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.endsWith(".gguf")) return;
  const resp = fetch(req)
    .then((resp) => {
      if (resp.ok) {
        const copy = resp.clone();
        caches.open(SHELL).then((c) => c.put(req, copy));
      }
      return resp;
    })
    .catch(() => caches.match(req, { ignoreSearch: true }).then((r) => r || Response.error()));
  e.respondWith(Promise.all([resp, hasThreads()]).then(([r, threads]) => (threads ? isolated(r) : r)));
});
