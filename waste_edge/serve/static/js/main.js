// The page shell: tabs for the views, one shared SSE connection whose events every view can listen to
// (ctx.events: an EventTarget dispatching CustomEvents 'decision', 'stats', 'error', ...), the header badges.
import { streamEvents } from './api.js';
import { VIEWS } from './views.js';

const events = new EventTarget();
const ctx = { events, latest: { stats: null, decisions: {} } };
let current = null;

function show(view) {
  if (current) current.unmount();
  const root = document.getElementById('view');
  root.replaceChildren();
  current = view;
  for (const b of document.querySelectorAll('#views button')) {
    b.toggleAttribute('aria-current', b.dataset.view === view.id);
    if (b.dataset.view === view.id) b.setAttribute('aria-current', 'page');
  }
  view.mount(root, ctx);
  history.replaceState(null, '', `#${view.id}`);
}

function header(stats) {
  const badge = document.getElementById('health');
  badge.textContent = stats.healthy ? 'healthy' : 'unhealthy';
  badge.className = `badge ${stats.healthy ? 'ok' : 'bad'}`;
  document.getElementById('model').textContent = `${stats.model.name} · sha256 ${stats.model.sha256.slice(0, 12)}`;
}

function start() {
  const nav = document.getElementById('views');
  for (const v of VIEWS) {
    const b = document.createElement('button');
    b.textContent = v.title;
    b.dataset.view = v.id;
    b.addEventListener('click', () => show(v));
    nav.append(b);
  }
  const abort = new AbortController();
  streamEvents('/api/v1/events', (type, data) => {
    if (type === 'stats') { ctx.latest.stats = data; header(data); }
    if (type === 'decision') ctx.latest.decisions[data.camera] = data;
    if (type === 'error') {
      const badge = document.getElementById('health');
      badge.textContent = 'reconnecting…'; badge.className = 'badge bad';
    }
    events.dispatchEvent(new CustomEvent(type, { detail: data }));
  }, abort.signal);
  const wanted = VIEWS.find((v) => `#${v.id}` === location.hash) || VIEWS[0];
  show(wanted);
}

start();
