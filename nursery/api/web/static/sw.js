// The service worker: keeps this version's app shell (the page and its static files) so the
// app opens without a network, and hands the page a new version only when the user says so.
//
// Served at /sw.js (scope "/") by nursery/api/web, which fills in VERSION and SHELL. A new
// deployment changes both, so the browser, which checks /sw.js on navigations, installs the
// new worker beside the old one; it waits there until the page, at the user's word, posts
// "activate" (the page offers the update; it never reloads itself mid-edit).
//
// Only the shell is answered from the cache: a navigation to "/" and GETs under this
// version's /static/<version>/. The API and /ws always go to the network (the page keeps
// its own data offline, in IndexedDB).

const VERSION = "{{version}}";
const SHELL = {{shell}};
const CACHE = `nursery-shell-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(precache());
});

async function precache() {
  const cache = await caches.open(CACHE);
  for (const url of SHELL) {
    // Bypass the HTTP cache: the page itself is only "no-cache".
    const response = await fetch(new Request(url, { cache: "reload" }));
    // During a rolling deploy an instance of another version answers with its own file,
    // marked no-store: installing that would mix versions, so fail and let the browser
    // try again on a later navigation.
    if (!response.ok || /no-store/.test(response.headers.get("Cache-Control") ?? "")) {
      throw new Error(`cannot cache ${url}: ${response.status}`);
    }
    await cache.put(url, response);
  }
}

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("nursery-shell-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("message", (event) => {
  if (event.data === "activate") self.skipWaiting();
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== location.origin) return;
  if (request.mode === "navigate" && url.pathname === "/") {
    event.respondWith(fromCache("/", request));
  } else if (SHELL.includes(url.pathname)) {
    event.respondWith(fromCache(url.pathname, request));
  }
});

/** The cached copy, else the network (the cache was cleared, or the install failed). */
async function fromCache(key, request) {
  const cached = await caches.match(key, { cacheName: CACHE });
  return cached ?? fetch(request);
}
