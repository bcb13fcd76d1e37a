// LiveDrops service worker: shows the Web Push notifications the server sends (docs: web/README.md)
// and opens the drop when one is clicked. It caches nothing: the page always comes from the network.

self.addEventListener('push', (event) => {
  let m = {}
  try { m = event.data ? event.data.json() : {} } catch { m = { title: 'LiveDrops', body: event.data ? event.data.text() : '' } }
  const title = m.title || 'LiveDrops'
  event.waitUntil(self.registration.showNotification(title, {
    body: m.body || '', tag: m.tag, icon: undefined,
    data: { url: m.url || '/', drop_id: m.drop_id },
  }))
})

self.addEventListener('notificationclick', (event) => {
  event.notification.close()
  const url = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin)
  event.waitUntil((async () => {
    const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
    for (const tab of tabs) {
      if (new URL(tab.url).origin === url.origin) {
        await tab.focus()
        try { await tab.navigate(url.href) } catch { tab.postMessage({ type: 'open', url: url.href }) }
        return
      }
    }
    await self.clients.openWindow(url.href)
  })())
})

self.addEventListener('install', () => self.skipWaiting())
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()))
