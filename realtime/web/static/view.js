// moodstream's live view: the server's event stream (/events) drawn as it arrives.
// Events: hello, history, mood, colour, status (see realtime/web/server.py).  Text from the feed
// goes into the page as text (textContent), never as markup.
"use strict";

const FEED_QUIET_S = 3.5; // status comes every second: this long without any message, say so
const TOP_TAGS = 8;

const view = {
  states: {}, historyS: 300, trailS: 60,
  t: [], valence: [], arousal: [], silent: [], // the timeline's columns (stream seconds)
  lastEventAt: null, connected: false, lastStatus: null, lastMood: null,
};
const $ = (id) => document.getElementById(id);

function signed(x) { return x === null ? "n/a" : (x >= 0 ? "+" : "") + x.toFixed(2); }
function words(x, low, high) {
  if (x === null) return "";
  return x > 0.33 ? high : x < -0.33 ? low : "in between";
}
function alpha(hex, a) { // "#rrggbb" -> rgba(...)
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}
function clock(s) {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s - 60 * m)).padStart(2, "0")}`;
}

// -- charts ----------------------------------------------------------------------------------

const QUADRANTS = { // where each state's name goes on the plane
  "energetic-happy": [0.5, 0.92], "tense-angry": [-0.5, 0.92], "sad-dark": [-0.5, -0.92], "calm-tender": [0.5, -0.92],
};

const planeRegions = { // the four states' quadrants, tinted and named, under the points
  id: "regions",
  beforeDatasetsDraw(chart) {
    const { ctx, scales: { x, y } } = chart;
    ctx.save();
    for (const [state, [cx, cy]] of Object.entries(QUADRANTS)) {
      const colour = view.states[state] || "#444444";
      const [x0, x1] = cx > 0 ? [0, 1] : [-1, 0];
      const [y0, y1] = cy > 0 ? [0, 1] : [-1, 0];
      ctx.fillStyle = alpha(colour, 0.12);
      ctx.fillRect(x.getPixelForValue(x0), y.getPixelForValue(y1),
        x.getPixelForValue(x1) - x.getPixelForValue(x0), y.getPixelForValue(y0) - y.getPixelForValue(y1));
      ctx.fillStyle = alpha(colour, 0.9);
      ctx.font = "600 13px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(state, x.getPixelForValue(cx), y.getPixelForValue(cy));
    }
    ctx.restore();
  },
};

const silenceShade = { // grey bands on the timeline where the input was silent
  id: "silence",
  beforeDatasetsDraw(chart) {
    const { ctx, chartArea, scales: { x } } = chart;
    ctx.save();
    ctx.fillStyle = "rgba(140, 143, 156, 0.18)";
    let start = null;
    for (let i = 0; i <= view.t.length; i++) {
      const quiet = i < view.t.length && view.silent[i];
      if (quiet && start === null) start = view.t[i];
      if (!quiet && start !== null) {
        const end = i < view.t.length ? view.t[i] : view.t[i - 1];
        const left = Math.max(x.getPixelForValue(start), chartArea.left);
        ctx.fillRect(left, chartArea.top, Math.max(x.getPixelForValue(end) - left, 2), chartArea.bottom - chartArea.top);
        start = null;
      }
    }
    ctx.restore();
  },
};

const axis = (title, min, max) => ({
  min, max, title: { display: true, text: title, color: "#8a8f9c" },
  grid: { color: "rgba(255,255,255,0.08)" }, ticks: { color: "#8a8f9c" },
});

let plane = null;
let timeline = null;

function makeCharts() {
  Chart.defaults.color = "#8a8f9c";
  plane = new Chart($("plane"), {
    type: "scatter",
    data: { datasets: [
      { label: "last minute", data: [], showLine: true, borderWidth: 1, pointRadius: 2,
        borderColor: "rgba(232,232,234,0.25)", pointBackgroundColor: [] },
      { label: "now", data: [], pointRadius: 9, pointBorderColor: "#ffffff", pointBorderWidth: 2, pointBackgroundColor: "#000" },
    ] },
    options: {
      animation: false, maintainAspectRatio: false, plugins: { legend: { display: false }, tooltip: { enabled: false } },
      scales: { x: axis("valence: negative ← → positive", -1, 1), y: axis("arousal: calm ← → energetic", -1, 1) },
    },
    plugins: [planeRegions],
  });
  timeline = new Chart($("timeline"), {
    type: "line",
    data: { datasets: [
      { label: "valence", data: [], borderColor: "#e0a030", borderWidth: 2, pointRadius: 0, spanGaps: false },
      { label: "arousal", data: [], borderColor: "#4da3ff", borderWidth: 2, pointRadius: 0, spanGaps: false },
    ] },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      plugins: { legend: { labels: { boxHeight: 2 } }, tooltip: { enabled: false } },
      scales: { x: { ...axis("stream time (s); grey: silence", 0, 1), type: "linear" }, y: axis("", -1, 1) },
    },
    plugins: [silenceShade],
  });
}

function drawCharts() {
  if (!plane) return;
  const n = view.t.length;
  const now = n ? view.t[n - 1] : 0;
  // The trail: the last trailS seconds with valence/arousal, fading with age.
  const trail = [], shades = [];
  for (let i = 0; i < n; i++) {
    const age = now - view.t[i];
    if (age > view.trailS || view.valence[i] === null) continue;
    trail.push({ x: view.valence[i], y: view.arousal[i] });
    shades.push(`rgba(232, 232, 234, ${(0.9 * (1 - age / view.trailS) + 0.05).toFixed(3)})`);
  }
  plane.data.datasets[0].data = trail;
  plane.data.datasets[0].pointBackgroundColor = shades;
  const m = view.lastMood;
  plane.data.datasets[1].data = m && m.valence !== null ? [{ x: m.valence, y: m.arousal }] : [];
  plane.data.datasets[1].pointBackgroundColor = $("swatch").dataset.rgb || "#000";
  plane.update("none");

  const xs = timeline.options.scales.x;
  xs.min = Math.max(0, now - view.historyS);
  xs.max = Math.max(now, xs.min + 1);
  timeline.data.datasets[0].data = view.t.map((t, i) => ({ x: t, y: view.valence[i] }));
  timeline.data.datasets[1].data = view.t.map((t, i) => ({ x: t, y: view.arousal[i] }));
  timeline.update("none");
}

// -- the events ------------------------------------------------------------------------------

function onHello(hello) {
  view.states = hello.states;
  view.historyS = hello.history_s;
  view.trailS = hello.trail_s;
  $("where").textContent = hello.title;
}

function onHistory(h) {
  view.t = h.t_stream; view.valence = h.valence; view.arousal = h.arousal; view.silent = h.silent;
  drawCharts();
}

function onMood(m) {
  // A new run (the analyzer restarted): its seq starts again, and mostly its stream time too.
  const newRun = (view.lastMood && m.seq < view.lastMood.seq) || (view.t.length && m.t_stream < view.t[view.t.length - 1] - 1);
  if (newRun) { // start over
    view.t = []; view.valence = []; view.arousal = []; view.silent = [];
  }
  // A browser that connects mid-show gets the last mood twice: in the history, then as itself.
  if (!view.t.length || m.t_stream !== view.t[view.t.length - 1]) {
    view.t.push(m.t_stream); view.valence.push(m.valence); view.arousal.push(m.arousal); view.silent.push(m.silent);
  }
  while (view.t.length && view.t[0] < m.t_stream - view.historyS) {
    view.t.shift(); view.valence.shift(); view.arousal.shift(); view.silent.shift();
  }
  view.lastMood = m;
  const state = $("state");
  state.textContent = m.silent ? "silence" : m.state || "(no valence/arousal)";
  state.dataset.seq = m.seq;
  $("valence").textContent = signed(m.valence);
  $("arousal").textContent = signed(m.arousal);
  $("valence-words").textContent = words(m.valence, "negative", "positive");
  $("arousal-words").textContent = words(m.arousal, "calm", "energetic");
  $("active").textContent = m.silent ? "" : [...m.moods, ...m.emotions, ...m.descriptors].join(" · ");
  $("clock").textContent = clock(m.t_stream);

  const top = Object.entries(m.tags).sort((a, b) => b[1] - a[1]).slice(0, TOP_TAGS);
  const active = new Set(m.active);
  const items = top.map(([name, p]) => {
    const li = document.createElement("li");
    li.className = active.has(name) ? "active" : "";
    li.dataset.tag = name;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const label = document.createElement("span");
    label.textContent = name;
    const value = document.createElement("span");
    value.className = "p";
    value.textContent = p.toFixed(2);
    li.append(bar, label, value);
    return li;
  });
  $("tags").replaceChildren(...items);
  $("top-tag").textContent = m.silent || !top.length ? "n/a" : top[0][0];
  $("hop").textContent = `${m.hop_s} s (context ${m.context_s} s, smoothing ${m.smooth_s} s)`;
  drawCharts();
}

function onColour(c) {
  const swatch = $("swatch");
  swatch.style.background = c.rgb;
  swatch.dataset.rgb = c.rgb;
}

function onStatus(s) {
  view.lastStatus = s;
  const src = s.source;
  const rate = src.sample_rate_hz ? `, ${src.sample_rate_hz} Hz` : "";
  const name = src.name === src.kind ? "" : ` ${src.name}`;
  $("source").textContent = `${src.kind}${name} (${src.state}${rate})`;
  $("source").className = src.state === "running" ? "ok" : "trouble";
  $("model").textContent = s.model;
  const lat = s.latency_ms;
  $("latency").textContent = lat.p50 === null ? "n/a" : `p50 ${lat.p50.toFixed(0)} ms, p99 ${lat.p99.toFixed(0)} ms`;
  $("drops").textContent = `${s.overflows} overflows, ${s.dropped_samples} samples dropped, ${s.gaps} gaps`;
  $("drops").className = s.overflows || s.dropped_samples || s.gaps ? "trouble" : "ok";
  $("outputs").textContent = s.outputs.length
    ? s.outputs.map((o) => `${o.kind} ${o.target}: ${o.state}${o.error && o.state !== "ok" ? ` (${o.error})` : ""}`).join("; ")
    : "none";
  $("outputs").className = s.outputs.every((o) => o.state === "ok") ? "ok" : "trouble";
}

// What is wrong, if anything: the view's server, the feed, the source, in that order.
function trouble() {
  if (!view.connected) return ["bad", "the view's server is not answering: retrying…"];
  const quiet = (performance.now() - view.lastEventAt) / 1000;
  if (view.lastEventAt !== null && quiet > FEED_QUIET_S) return ["bad", `no messages from the analyzer for ${quiet.toFixed(0)} s`];
  const s = view.lastStatus;
  if (!s) return null;
  const src = s.source;
  if (src.state === "stalled") return ["warn", `the ${src.kind} gives no audio (stalled): check the source`];
  if (src.state === "reconnecting") {
    const r = src.reconnect;
    return ["warn", `the ${src.kind} was lost: reconnecting${r ? ` (attempt ${r.attempt}: ${r.reason})` : ""}`];
  }
  if (src.state === "ended") return ["warn", `the ${src.kind} ended`];
  if (src.state === "stopped") return ["warn", "the analyzer was stopped"];
  if (src.state === "error") return ["bad", `the ${src.kind} failed: ${src.error || "unknown error"}`];
  return null;
}

function showBanner() {
  const banner = $("banner");
  const what = trouble();
  banner.hidden = !what;
  if (what) {
    banner.className = what[0] === "bad" ? "banner bad" : "banner";
    banner.dataset.kind = what[0];
    banner.textContent = what[1];
  }
}

function connect() {
  const events = new EventSource("events");
  const on = (name, handle) => events.addEventListener(name, (e) => {
    view.lastEventAt = performance.now();
    handle(JSON.parse(e.data));
    showBanner();
  });
  events.onopen = () => { view.connected = true; showBanner(); };
  events.onerror = () => { view.connected = false; showBanner(); }; // EventSource retries by itself
  on("hello", onHello);
  on("history", onHistory);
  on("mood", onMood);
  on("colour", onColour);
  on("status", onStatus);
}

makeCharts();
connect();
setInterval(showBanner, 500);
