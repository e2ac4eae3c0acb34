// The Review view: the collected (uncertain) frames one at a time, the model's guess, buttons per class,
// skip and back, keyboard shortcuts (1..9 = class, S = skip, Backspace = back), the label counts, and
// "Adapt and swap" (POST /api/v1/adapt). Labels go to labels.csv through POST /api/v1/review/labels.
import { apiFetch, getJSON } from './api.js';

let root = null;
let state = null;
let onKey = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function load() {
  const res = await apiFetch('/api/v1/review');
  const data = await res.json();
  if (!res.ok) { root.replaceChildren(el('p', 'empty', data.detail)); return; }
  state = { ...data, queue: data.frames.filter((f) => f.label === null), done: [] };
  render();
}

async function frameImage(img, file) {
  const res = await apiFetch(`/api/v1/review/frame/${file.split('/').map(encodeURIComponent).join('/')}`);
  if (res.ok) img.src = URL.createObjectURL(await res.blob());
}

async function label(value) {
  const f = state.queue[0];
  if (!f) return;
  const res = await apiFetch('/api/v1/review/labels', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ labels: { [f.file]: value } }),
  });
  const data = await res.json();
  if (!res.ok) { alert(data.detail); return; }
  state.counts = data.counts;
  state.done.push(state.queue.shift());
  render();
}

async function back() {
  const f = state.done.pop();
  if (!f) return;
  await apiFetch('/api/v1/review/labels', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ labels: { [f.file]: null } }),
  });
  state.queue.unshift(f);
  await load();
}

async function adaptAndSwap(button, out) {
  button.disabled = true;
  out.textContent = 'adapting… (the cameras keep running on the current model)';
  const res = await apiFetch('/api/v1/adapt', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  const data = await res.json();
  out.textContent = res.ok ? `now serving ${data.model.name} (sha256 ${data.model.sha256.slice(0, 12)}), ${data.labelled} labels` : `adapt failed: ${data.detail}`;
  button.disabled = false;
}

function render() {
  const counts = Object.entries(state.counts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none yet';
  const head = el('p', 'review-counts', `${state.queue.length} to review · labelled: ${counts} · folder ${state.folder}`);
  const adapt = el('button', 'adapt', 'Adapt and swap');
  const adaptOut = el('span', 'adapt-out', '');
  adapt.addEventListener('click', () => adaptAndSwap(adapt, adaptOut));
  const f = state.queue[0];
  const body = el('section', 'review');
  if (!f) {
    body.append(el('p', 'empty', 'Nothing to review: uncertain frames appear here as the cameras collect them.'));
  } else {
    const img = el('img', 'review-frame');
    img.alt = f.file;
    frameImage(img, f.file);
    const conf = typeof f.confidence === 'number' ? ` (${(100 * f.confidence).toFixed(0)} %)` : '';
    const guess = el('p', 'guess', `model's guess: ${f.guess ?? '?'}${conf} · ${f.camera ?? ''} ${f.time ?? ''}`);
    const buttons = el('div', 'review-buttons');
    state.classes.forEach((c, i) => {
      const b = el('button', `label label-${c}`, `${i + 1} · ${state.display_names[i]} (${c})`);
      b.addEventListener('click', () => label(c));
      buttons.append(b);
    });
    const skip = el('button', 'label skip', 'S · skip');
    skip.addEventListener('click', () => label('skip'));
    const undo = el('button', 'label back', '⌫ · back');
    undo.addEventListener('click', back);
    buttons.append(skip, undo);
    body.append(img, guess, buttons);
  }
  root.replaceChildren(head, body, el('div', 'adapt-row'));
  root.lastChild.append(adapt, adaptOut);
}

export default {
  id: 'review',
  title: 'Review',
  mount(r) {
    root = r;
    onKey = (e) => {
      if (!state || e.target.closest('input, textarea, dialog')) return;
      const n = Number.parseInt(e.key, 10);
      if (n >= 1 && n <= state.classes.length) label(state.classes[n - 1]);
      else if (e.key === 's' || e.key === 'S') label('skip');
      else if (e.key === 'Backspace') { e.preventDefault(); back(); }
    };
    document.addEventListener('keydown', onKey);
    load();
  },
  unmount() {
    document.removeEventListener('keydown', onKey);
    root = null; state = null;
  },
};
