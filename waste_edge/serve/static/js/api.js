// HTTP helpers of the page: the bearer token (asked once, kept in localStorage), JSON fetch, and the two
// long-lived streams (SSE and MJPEG) read with fetch, so they can send the Authorization header too.
const TOKEN_KEY = 'waste-edge-token';
let asking = null;

export function token() { return localStorage.getItem(TOKEN_KEY) || ''; }

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

// Ask for the token once (a <dialog>); concurrent 401s share one question.
function askToken() {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dlg = document.getElementById('token-dialog');
      const form = document.getElementById('token-form');
      form.addEventListener('submit', () => {
        localStorage.setItem(TOKEN_KEY, document.getElementById('token-input').value.trim());
        asking = null;
        resolve();
      }, { once: true });
      dlg.showModal();
    });
  }
  return asking;
}

// fetch with the token; on 401 asks for it and tries again.
export async function apiFetch(path, opts = {}) {
  for (;;) {
    const res = await fetch(path, { ...opts, headers: headers(opts.headers || {}) });
    if (res.status !== 401) return res;
    await askToken();
  }
}

export async function getJSON(path) {
  const res = await apiFetch(path);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Server-Sent Events over fetch: calls onEvent(type, data) per event; reconnects after 2 s until aborted.
export async function streamEvents(path, onEvent, signal) {
  const dec = new TextDecoder();
  while (!signal.aborted) {
    try {
      const res = await apiFetch(path, { signal });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const reader = res.body.getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let type = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (data.length) onEvent(type, JSON.parse(data.join('\n')));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      onEvent('error', { message: String(e) });
    }
    await sleep(2000);
  }
}

function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// MJPEG (multipart/x-mixed-replace) over fetch into an <img>: each part's Content-Length cuts the stream.
export async function streamMjpeg(path, img, signal) {
  const CRLF2 = new TextEncoder().encode('\r\n\r\n');
  const latin1 = new TextDecoder('latin1');
  let url = null;
  while (!signal.aborted) {
    try {
      const res = await apiFetch(path, { signal });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const reader = res.body.getReader();
      let buf = new Uint8Array(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buf.length + value.length);
        joined.set(buf); joined.set(value, buf.length); buf = joined;
        for (;;) {
          const h = indexOf(buf, CRLF2, 0);
          if (h < 0) break;
          const m = /content-length:\s*(\d+)/i.exec(latin1.decode(buf.subarray(0, h)));
          if (!m) { buf = buf.subarray(h + 4); continue; }
          const start = h + 4, len = Number(m[1]);
          if (buf.length < start + len) break;
          const jpeg = buf.slice(start, start + len);
          buf = buf.subarray(start + len);
          const next = URL.createObjectURL(new Blob([jpeg], { type: 'image/jpeg' }));
          img.src = next;
          if (url) URL.revokeObjectURL(url);
          url = next;
        }
      }
    } catch (e) {
      if (signal.aborted) break;
    }
    await sleep(2000);
  }
  if (url) URL.revokeObjectURL(url);
}
