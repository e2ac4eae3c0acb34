// The live view: per camera the annotated stream, the current decision and confidence, the B / N /
// uncertain counts of the last hour, frames/s and latency; updated from the shared SSE events.
import { streamMjpeg } from './api.js';

let root = null;
let abort = null;
let listeners = [];
const cards = new Map();

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function card(cam, classes) {
  const c = el('section', 'camera');
  c.id = `cam-${cam.id}`;
  c.dataset.camera = cam.id;
  const h = el('h2', null, cam.id);
  const state = el('span', 'state', cam.state);
  h.append(state);
  const img = el('img', 'stream');
  img.alt = `camera ${cam.id}`;
  const decision = el('div', 'decision', '…');
  const confidence = el('div', 'confidence', '');
  const counts = el('div', 'counts');
  const countEls = {};
  for (const label of [...classes, 'uncertain']) {
    const box = el('div');
    const b = el('b', `count count-${label}`, '0');
    box.append(b, el('span', null, label));
    counts.append(box);
    countEls[label] = b;
  }
  const perf = el('div', 'perf', '');
  c.append(h, img, decision, confidence, el('div', 'perf', 'last hour'), counts, perf);
  streamMjpeg(`/stream/${encodeURIComponent(cam.id)}.mjpg`, img, abort.signal);
  return { c, state, decision, confidence, countEls, perf };
}

function onDecision(d) {
  const k = cards.get(d.camera);
  if (!k) return;
  k.decision.textContent = d.display_name;
  k.decision.dataset.label = d.label;
  k.confidence.textContent = `confidence ${(d.confidence * 100).toFixed(1)} %`;
}

function onStats(s) {
  const grid = root.querySelector('.cameras');
  if (!s.cameras.length) {
    grid.replaceChildren(el('p', 'empty', 'No cameras: this service only answers POST /api/v1/classify.'));
    return;
  }
  const classes = s.cameras[0] ? Object.keys(s.cameras[0].last_hour).filter((l) => l !== 'uncertain') : [];
  for (const cam of s.cameras) {
    let k = cards.get(cam.id);
    if (!k) {
      k = card(cam, classes);
      cards.set(cam.id, k);
      grid.append(k.c);
    }
    k.state.textContent = cam.state;
    k.state.className = `state ${cam.state}`;
    for (const [label, n] of Object.entries(cam.last_hour)) if (k.countEls[label]) k.countEls[label].textContent = n;
    const lat = cam.latency_ms.total;
    k.perf.textContent = `${cam.fps.toFixed(1)} frames/s · latency p50 ${lat ? lat.p50.toFixed(1) : '–'} ms, p99 ${lat ? lat.p99.toFixed(1) : '–'} ms`;
    if (cam.decision && !k.decision.dataset.label) onDecision({ camera: cam.id, ...cam.decision });
  }
}

export default {
  id: 'live',
  title: 'Live',
  mount(r, ctx) {
    root = r;
    abort = new AbortController();
    root.append(el('div', 'cameras'));
    const on = (type, fn) => {
      const h = (e) => fn(e.detail);
      ctx.events.addEventListener(type, h);
      listeners.push([ctx.events, type, h]);
    };
    on('decision', onDecision);
    on('stats', onStats);
    if (ctx.latest.stats) onStats(ctx.latest.stats);
    for (const d of Object.values(ctx.latest.decisions)) onDecision(d);
  },
  unmount() {
    abort.abort();
    for (const [t, type, h] of listeners) t.removeEventListener(type, h);
    listeners = [];
    cards.clear();
    root = null;
  },
};
