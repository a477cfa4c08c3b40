// The line page: renders the snapshot edged sends when the stream opens, then each
// result and status event. EventSource reconnects by itself; every new snapshot
// re-renders the page, so after edged restarts the counts start again with the process.
"use strict";

(function () {
  const MAX_RESULTS = 50;
  const $ = (id) => document.getElementById(id);
  const conn = $("conn"), banner = $("banner"), verdicts = $("verdicts"),
    images = $("ng-images"), ngEmpty = $("ng-empty"), counters = $("counters"),
    models = $("models"), sources = $("sources");

  let counts = {};         // inspection -> {OK, NG, UNKNOWN}
  let maxImages = 12;
  let pending = [];        // results not yet drawn, oldest first
  let countsDirty = false;
  let timer = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const p = (n, w) => String(n).padStart(w || 2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
  }

  function dateTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toLocaleDateString() + " " + clock(iso).slice(0, 8);
  }

  function score(s) {
    return typeof s === "number" ? s.toFixed(3) : "n/a";
  }

  function resultItem(r) {
    const li = el("li", "result");
    li.dataset.verdict = r.verdict;
    li.dataset.seq = String(r.seq);
    li.dataset.inspection = r.inspection;
    li.appendChild(el("span", "verdict", r.verdict));
    li.appendChild(el("span", "what", r.inspection + (r.label ? " · " + r.label : "")));
    li.appendChild(el("span", "score", score(r.score)));
    const meta = [clock(r.captured_at), r.source + " #" + r.seq];
    if (r.model && r.model.version) meta.push(r.model.name + " " + r.model.version);
    if (r.part_id) meta.push("part " + r.part_id);
    if (typeof r.latency_ms === "number") meta.push(r.latency_ms.toFixed(1) + " ms");
    li.appendChild(el("span", "meta", meta.join("  ·  ")));
    return li;
  }

  function imageFigure(m) {
    const f = el("figure", "ng");
    f.dataset.id = m.id;
    const img = el("img");
    img.src = "/v1/line/images/" + encodeURIComponent(m.id);
    img.alt = "NG " + m.inspection + " " + (m.label || "");
    // Only the newest images are kept on the box: one that rotated out before the
    // browser fetched it says so instead of showing a broken picture.
    img.addEventListener("error", () => f.classList.add("gone"));
    f.appendChild(img);
    const cap = el("figcaption");
    // A break may fall after an underscore (broken_|finger), never inside a word.
    cap.appendChild(el("span", "label", (m.label || "NG").replace(/_/g, "_\u200b")));
    const line = el("div", "line");
    line.appendChild(el("span", "score", score(m.score)));
    line.appendChild(el("time", "time", clock(m.captured_at).slice(0, 8)));
    cap.appendChild(line);
    cap.appendChild(el("span", "where", m.inspection));
    f.appendChild(cap);
    return f;
  }

  function addImage(m) {
    images.insertBefore(imageFigure(m), images.firstChild);
    while (images.children.length > maxImages) images.removeChild(images.lastChild);
    ngEmpty.hidden = images.children.length > 0;
  }

  function count(r) {
    const c = counts[r.inspection] || (counts[r.inspection] = { OK: 0, NG: 0, UNKNOWN: 0 });
    if (r.verdict === "OK" || r.verdict === "NG") c[r.verdict]++;
    else c.UNKNOWN++;
    countsDirty = true;
  }

  function renderCounts() {
    countsDirty = false;
    for (const name of Object.keys(counts).sort()) {
      const c = counts[name];
      let tr = counters.querySelector('tr[data-inspection="' + CSS.escape(name) + '"]');
      if (!tr) {
        tr = el("tr");
        tr.dataset.inspection = name;
        tr.appendChild(el("td", "name", name));
        for (const cls of ["ok", "ng", "unknown", "ng-share"]) tr.appendChild(el("td", cls));
        counters.appendChild(tr);
      }
      const total = c.OK + c.NG + c.UNKNOWN;
      tr.querySelector("td.ok").textContent = c.OK;
      tr.querySelector("td.ng").textContent = c.NG;
      tr.querySelector("td.unknown").textContent = c.UNKNOWN;
      tr.querySelector("td.ng-share").textContent = total ? (100 * c.NG / total).toFixed(1) + "%" : "–";
    }
  }

  // Results are drawn in batches: at hundreds of verdicts a second, drawing each one
  // would cost more than the technician can see.
  function flush() {
    timer = 0;
    const frag = document.createDocumentFragment();
    for (let i = pending.length - 1; i >= 0; i--) frag.appendChild(resultItem(pending[i]));
    pending = [];
    verdicts.insertBefore(frag, verdicts.firstChild);
    while (verdicts.children.length > MAX_RESULTS) verdicts.removeChild(verdicts.lastChild);
    if (countsDirty) renderCounts();
  }

  function schedule() {
    if (!timer) timer = setTimeout(flush, 100);
  }

  function onSnapshot(s) {
    if (timer) { clearTimeout(timer); timer = 0; }
    pending = [];
    if (s.title) {
      $("title").textContent = s.title;
      document.title = s.title + " · edged line";
    }
    maxImages = s.max_images || 12;
    counts = {};
    for (const [name, c] of Object.entries(s.counters || {})) {
      counts[name] = { OK: c.OK || 0, NG: c.NG || 0, UNKNOWN: c.UNKNOWN || 0 };
    }
    counters.replaceChildren();
    renderCounts();
    verdicts.replaceChildren(...(s.results || []).slice(0, MAX_RESULTS).map(resultItem));
    images.replaceChildren(...(s.images || []).slice(0, maxImages).map(imageFigure));
    ngEmpty.hidden = images.children.length > 0;
  }

  function onResult(r) {
    count(r);
    pending.push(r);
    if (pending.length > MAX_RESULTS) pending.splice(0, pending.length - MAX_RESULTS);
    if (r.image) {
      addImage({ id: r.image, inspection: r.inspection, label: r.label, score: r.score,
        captured_at: r.captured_at });
    }
    schedule();
  }

  function bytes(n) {
    if (!n) return "0 B";
    const u = ["B", "kB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }

  function renderBanner(st) {
    const parts = [];
    let kind = "";
    const m = st.mqtt;
    if (m && m.connected === false) {
      kind = "broker";
      parts.push("MQTT broker " + (m.broker || "") + " unreachable: results are spooled on this box (" +
        (m.spool_records || 0) + " records, " + bytes(m.spool_bytes) + ") and sent when it is back.");
    }
    const open = Object.entries(st.breakers || {}).filter(([, v]) => v === "open").map(([k]) => k).sort();
    for (const name of open) {
      if (!kind) kind = "breaker";
      if (name.startsWith("inference:")) {
        parts.push("Breaker open: model " + name.slice("inference:".length) +
          " is not asked; frames get the fail-safe action (verdict UNKNOWN).");
      } else if (name === "mqtt") {
        parts.push("Breaker open: MQTT publishing paused; results are spooled on this box.");
      } else {
        parts.push("Breaker open: " + name + ".");
      }
    }
    if (kind) {
      banner.dataset.kind = kind;
      banner.textContent = parts.join("  ");
      banner.hidden = false;
    } else {
      banner.hidden = true;
      banner.textContent = "";
      delete banner.dataset.kind;
    }
  }

  function renderModels(list) {
    models.replaceChildren(...(list || []).map((m) => {
      const li = el("li");
      li.dataset.model = m.name;
      li.appendChild(el("span", "name", m.name));
      li.appendChild(el("span", "version", m.version));
      const ul = el("ul", "swaps");
      for (const s of m.swaps || []) {
        const sw = el("li", s.result === "failed" || s.result === "refused" ? "failed" : "",
          dateTime(s.time) + "  " + (s.from || "–") + " → " + (s.to || "–") + "  " + s.action + "  " + s.result +
          (s.reason ? ": " + s.reason : ""));
        if (s.reason) sw.title = s.reason;
        ul.appendChild(sw);
      }
      li.appendChild(ul);
      return li;
    }));
  }

  function renderSources(map) {
    const names = Object.keys(map || {}).sort();
    sources.replaceChildren(...names.map((name) => {
      const s = map[name];
      const li = el("li");
      li.dataset.source = name;
      li.dataset.up = s.up ? "true" : "false";
      li.appendChild(el("span", "name", name));
      li.appendChild(el("span", "state", s.up ? "up" : "DOWN"));
      const rate = typeof s.rate_hz === "number" ? s.rate_hz.toFixed(1) + " Hz" : "";
      const limit = s.rate_limit_hz ? " (limited to " + s.rate_limit_hz.toFixed(1) + " Hz)" : "";
      li.appendChild(el("div", "detail", [s.type, rate + limit,
        s.backpressure ? "pressure " + s.backpressure : "",
        "dropped " + ((s.dropped_full || 0) + (s.dropped_stale || 0))].filter(Boolean).join(" · ")));
      if (!s.up && s.last_fault) li.appendChild(el("div", "fault", s.last_fault));
      return li;
    }));
  }

  function onStatus(st) {
    renderBanner(st);
    renderModels(st.models);
    renderSources(st.sources);
  }

  function setConn(live, text) {
    conn.dataset.state = live ? "live" : "down";
    conn.textContent = text;
  }

  function parse(e, fn) {
    let v;
    try { v = JSON.parse(e.data); } catch (err) { return; }
    fn(v);
  }

  function connect() {
    const es = new EventSource("/v1/events");
    es.addEventListener("open", () => setConn(true, "live"));
    es.addEventListener("error", () => {
      setConn(false, "no connection to edged, retrying…");
      // A closed source does not retry by itself (an error status); start a new one.
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    });
    es.addEventListener("snapshot", (e) => parse(e, onSnapshot));
    es.addEventListener("result", (e) => parse(e, onResult));
    es.addEventListener("status", (e) => parse(e, onStatus));
  }

  connect();
})();
