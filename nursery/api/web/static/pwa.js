// Installing and updating the app: the service worker (/sw.js, see sw.js for what it caches).
//
// A new version is never forced on the page. When the browser has installed a newer worker
// (it checks /sw.js on navigations, and we ask hourly for an app left open), `onUpdate(apply)`
// is called; the page offers it, and `apply()` — the user's click — lets the new worker take
// over and reloads. Writes not yet sent are in IndexedDB, so the reload loses nothing.

const CHECK_EVERY_MS = 60 * 60 * 1000;

export async function registerServiceWorker({ onUpdate }) {
  if (!("serviceWorker" in navigator)) return;
  let registration;
  try {
    registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  } catch {
    return; // e.g. not a secure context: the page still works, online
  }
  let accepted = false;
  const offer = (worker) => {
    // The first install (no controller yet) is not an update: nothing to offer.
    if (!navigator.serviceWorker.controller) return;
    onUpdate(() => {
      accepted = true;
      worker.postMessage("activate");
    });
  };
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (accepted) location.reload();
  });
  // A new worker may be installing already (this very navigation started it, before this
  // script ran), installed and waiting, or found later.
  const watch = (worker) => {
    if (!worker) return;
    if (worker.state === "installed") offer(worker);
    else worker.addEventListener("statechange", () => { if (worker.state === "installed") offer(worker); });
  };
  watch(registration.waiting);
  watch(registration.installing);
  registration.addEventListener("updatefound", () => watch(registration.installing));
  setInterval(() => registration.update().catch(() => {}), CHECK_EVERY_MS);
}
