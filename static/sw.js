// Pricer's service worker: keeps the app's own files so the page opens
// offline after the first visit. The model file is cached by the app's
// worker (Cache Storage "pricer-models-v1"), not here.
const SHELL = "pricer-shell-v1";

async function precache() {
  const cache = await caches.open(SHELL);
  const index = await fetch("./", { cache: "no-cache" });
  const html = await index.clone().text();
  await cache.put("./", index);
  const urls = new Set(["worker.js", "worker_bg.wasm", "worker_relaxed.js", "worker_relaxed_bg.wasm"]);
  for (const m of html.matchAll(/(?:src|href)="([^"#?]+)"/g)) {
    if (!m[1].includes("//") && !m[1].endsWith(".gguf")) urls.add(m[1]);
  }
  await cache.addAll([...urls]);
}

self.addEventListener("install", (e) => e.waitUntil(precache().then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

// Network first, so a new version shows at once; the cache when offline.
self.addEventListener("fetch", (e) => {
  const req = e.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.endsWith(".gguf")) return;
  e.respondWith(
    fetch(req)
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(SHELL).then((c) => c.put(req, copy));
        }
        return resp;
      })
      .catch(() => caches.match(req, { ignoreSearch: true }).then((r) => r || Response.error()))
  );
});
