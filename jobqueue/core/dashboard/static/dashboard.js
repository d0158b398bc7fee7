// jobqueue dashboard: plain JavaScript, no build step, no dependencies.
// Every second it asks the scheduler's JSON API (api/...) for the header numbers and for the
// view on screen, and redraws. All URLs are relative, so the dashboard also works behind a proxy.
"use strict";

(function () {
  const PAGES = ["status", "workers", "tasks", "jobs", "logs"];
  const TICK_MS = 1000;

  // -- small helpers -------------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const intFormat = new Intl.NumberFormat("en-US");
  function fmtInt(n) { return n === null || n === undefined ? "–" : intFormat.format(n); }

  function fmtBytes(n) {  // decimal units, as jobqueue's config reads them (32GB = 32e9 bytes)
    if (n === null || n === undefined) return "–";
    const units = [["PB", 1e15], ["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
    for (const [unit, size] of units) {
      if (n >= size * 0.9) return (n / size).toFixed(n / size >= 100 ? 0 : 1) + " " + unit;
    }
    return Math.round(n) + " B";
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1e-3) return Math.round(s * 1e6) + " µs";
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  function setMetric(name, text, value) {
    const node = $(`[data-metric="${name}"]`);
    if (!node) return;
    node.textContent = text;
    if (value !== undefined) node.dataset.value = String(value);
  }

  class HttpError extends Error {
    constructor(status) { super("HTTP " + status); this.status = status; }
  }

  async function getJSON(path) {
    const response = await fetch(path, {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) throw new HttpError(response.status);
    return response.json();
  }

  function setLive(ok, text, detail) {
    const node = $("#live");
    node.className = "live " + (ok ? "ok" : "bad");
    node.textContent = text;
    node.title = detail || "connection to the scheduler";
  }

  // Rows keyed by id, kept between refreshes so bars animate instead of being rebuilt.
  function keyed(container, items, key, create, update) {
    const old = new Map();
    for (const child of Array.from(container.children)) old.set(child.dataset.key, child);
    items.forEach((item, i) => {
      const k = String(key(item));
      let node = old.get(k);
      if (node) old.delete(k); else { node = create(item); node.dataset.key = k; }
      update(node, item);
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
    });
    for (const node of old.values()) node.remove();
  }

  function meter(fraction, label, warnAt, highAt) {
    const node = el("div", "meter");
    node.append(el("span"), el("em"));
    updateMeter(node, fraction, label, warnAt, highAt);
    return node;
  }

  function updateMeter(node, fraction, label, warnAt, highAt) {
    const f = Math.max(0, Math.min(1, fraction || 0));
    node.firstChild.style.width = (f * 100).toFixed(1) + "%";
    node.lastChild.textContent = label;
    node.classList.toggle("warn", warnAt !== undefined && f >= warnAt && f < highAt);
    node.classList.toggle("high", highAt !== undefined && f >= highAt);
  }

  function memoryMeter(w, node) {
    const label = w.memory_limit ? `${fmtBytes(w.memory)} / ${fmtBytes(w.memory_limit)}`
                                 : `${fmtBytes(w.memory)} (no limit)`;
    const fraction = w.memory_limit ? (w.memory || 0) / w.memory_limit : 0;
    if (!node) return meter(fraction, label, 0.8, 0.95);  // the workers' pause/terminate defaults
    updateMeter(node, fraction, label, 0.8, 0.95);
    return node;
  }

  function groupColor(name) {  // a stable color per task group
    let hash = 0;
    for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0;
    const hue = ((hash >>> 0) * 137.508) % 360;
    return `hsl(${hue.toFixed(0)}, 58%, 52%)`;
  }

  // -- header --------------------------------------------------------------------------------

  function renderSummary(s) {
    $("#address").textContent = s.address || "";
    document.title = `jobqueue · ${s.workers} workers`;
    const t = s.tasks;
    setMetric("workers", fmtInt(s.workers), s.workers);
    setMetric("threads", `${fmtInt(s.threads)} threads`, s.threads);
    setMetric("memory", fmtBytes(s.memory), s.memory);
    setMetric("memory_limit", s.memory_limit ? `of ${fmtBytes(s.memory_limit)} limit` : "no limit",
              s.memory_limit);
    setMetric("processing", fmtInt(t.processing), t.processing);
    const waiting = t.waiting + t.queued + t["no-worker"];
    // tasks that no running worker can take: what they request that no worker offers
    const noWorker = Object.entries(s.no_worker || {}).map(([what, n]) => `${fmtInt(n)} need ${what}`);
    setMetric("waiting", `${fmtInt(waiting)} waiting` +
              (noWorker.length ? ` (no worker offers: ${noWorker.join("; ")})` : ""), waiting);
    $('[data-metric="waiting"]').classList.toggle("bad", noWorker.length > 0);
    setMetric("done", fmtInt(s.finished), s.finished);
    setMetric("stored", `${fmtBytes(s.stored_bytes)} of results held`, s.stored_bytes);
    setMetric("erred", fmtInt(s.erred), s.erred);
    $('[data-metric="erred"]').classList.toggle("bad", s.erred > 0);
    setMetric("clients", `${fmtInt(s.clients)} client${s.clients === 1 ? "" : "s"}`, s.clients);
    const card = $("#jobs-card");
    card.hidden = !s.jobs;
    if (s.jobs) {
      const running = s.jobs.running || 0;
      setMetric("jobs_running", `${fmtInt(running)} running`, running);
      const other = Object.entries(s.jobs).filter(([k]) => k !== "running")
        .map(([k, v]) => `${v} ${k}`).join(", ");
      setMetric("jobs_other", other || "no other jobs");
    }
  }

  // -- status view: progress, small task stream, worker memory -------------------------------

  function renderProgress(groups) {
    const box = $("#progress");
    if (!groups.length) {
      box.replaceChildren(el("p", "empty", "No tasks yet. Submit some with client.submit or client.map."));
      return;
    }
    if (box.querySelector(".empty")) box.replaceChildren();
    keyed(box, groups, g => g.name, () => {
      const row = el("div", "row");
      const bar = el("div", "bar");
      for (const part of ["done", "erred", "running", "waiting"]) bar.append(el("span", part));
      row.append(el("span", "name"), bar, el("span", "count"));
      return row;
    }, (row, g) => {
      const total = g.done + g.erred + g.running + g.waiting;
      const [name, bar, count] = row.children;
      name.textContent = g.name;
      name.title = g.name;
      row.dataset.group = g.name;
      row.dataset.done = g.done;
      for (const part of ["done", "erred", "running", "waiting"]) {
        const span = bar.querySelector("." + part);
        span.style.width = total ? (100 * g[part] / total).toFixed(2) + "%" : "0";
        span.title = `${fmtInt(g[part])} ${part}`;
      }
      count.replaceChildren(el("b", null, fmtInt(g.done)), ` / ${fmtInt(total)}`);
      if (g.running) count.append(` · ${fmtInt(g.running)} running`);
      if (g.erred) count.append(" · ", el("span", "err", `${fmtInt(g.erred)} erred`));
      if (g.average_duration !== null) count.append(` · ${fmtSeconds(g.average_duration)} avg`);
    });
  }

  function renderWorkerBars(workers) {
    const box = $("#worker-bars");
    if (!workers.length) {
      box.replaceChildren(el("p", "empty", "No workers connected."));
      return;
    }
    if (box.querySelector(".empty")) box.replaceChildren();
    keyed(box, workers, w => w.address, w => {
      const row = el("div", "row");
      row.append(el("span", "name"), memoryMeter(w), el("span", "count"));
      return row;
    }, (row, w) => {
      const [name, bar, count] = row.children;
      name.textContent = w.name;
      name.title = w.address;
      memoryMeter(w, bar);
      count.textContent = `${w.running ?? 0}/${w.nthreads} threads busy · ${fmtInt(w.stored)} results`;
    });
  }

  // -- workers view --------------------------------------------------------------------------

  const workerSort = {key: "name", asc: true};
  let lastWorkers = null;

  function compareBy(key, asc) {
    return (a, b) => {
      const x = a[key], y = b[key];
      let c;
      if (typeof x === "number" || typeof y === "number") c = (x ?? -1) - (y ?? -1);
      else c = String(x ?? "").localeCompare(String(y ?? ""), undefined, {numeric: true});
      return asc ? c : -c;
    };
  }

  function renderWorkersTable(workers) {
    const rows = workers.slice().sort(compareBy(workerSort.key, workerSort.asc));
    for (const th of $$("#workers-table th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === workerSort.key);
      th.classList.toggle("asc", th.dataset.sort === workerSort.key && workerSort.asc);
    }
    keyed($("#workers-table tbody"), rows, w => w.address, () => {
      const tr = el("tr");
      const cells = ["mono", "mono", "", "num", "", "", "num", "num", "num", "num", "num"];
      for (const cls of cells) tr.append(el("td", cls));
      tr.children[4].append(meter(0, ""));
      tr.children[5].append(memoryMeter({memory: 0, memory_limit: 0}));
      return tr;
    }, (tr, w) => {
      const c = tr.children;
      c[0].textContent = w.name;
      c[0].title = w.address;
      c[1].textContent = w.host || "";
      c[2].replaceChildren(el("span", "badge " + w.status, w.status));
      c[3].textContent = w.nthreads;
      const cpu = w.cpu ?? 0;
      updateMeter(c[4].firstChild, cpu / (100 * w.nthreads), `${cpu.toFixed(0)}%`);
      memoryMeter(w, c[5].firstChild);
      c[6].textContent = fmtInt(w.running);
      c[7].textContent = fmtInt(w.processing);
      c[8].textContent = fmtInt(w.stored);
      c[9].textContent = fmtBytes(w.nbytes);
      c[10].textContent = w.last_seen < 2 ? "now" : fmtSeconds(w.last_seen) + " ago";
    });
  }

  for (const th of $$("#workers-table th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      workerSort.asc = workerSort.key === key ? !workerSort.asc : key === "name" || key === "host";
      workerSort.key = key;
      if (lastWorkers) renderWorkersTable(lastWorkers);
    });
  }

  // -- task stream ---------------------------------------------------------------------------

  class TaskStream {
    constructor(canvas, legend) {
      this.canvas = canvas;
      this.legend = legend;
      this.window = Number(canvas.dataset.window);
      this.data = null;
      this.received = 0;
      this.layout = null;
      canvas.addEventListener("mousemove", e => this.hover(e));
      canvas.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
    }

    serverNow() {
      return this.data ? this.data.now + (performance.now() - this.received) / 1000 : 0;
    }

    async refresh() {
      // the first time, ask for everything recent: the browser's clock may not be the server's
      const since = this.data ? `?since=${(this.serverNow() - this.window - 1).toFixed(3)}` : "";
      const data = await getJSON("api/tasks" + since);
      this.data = data;
      this.received = performance.now();
      this.renderLegend();
      this.draw();
    }

    renderLegend() {
      const groups = [...new Set(this.data.tasks.map(t => t[4]))].sort();
      const entries = groups.map(g => [g, groupColor(g)]);
      if (this.data.tasks.some(t => t[6])) entries.push(["erred", "var(--erred)"]);
      keyed(this.legend, entries, e => e[0], ([name, color]) => {
        const span = el("span");
        const sw = el("i", "sw");
        sw.style.background = color;
        span.append(sw, name);
        return span;
      }, () => {});
    }

    draw() {
      if (!this.data || this.canvas.offsetParent === null) return;
      const workers = this.data.workers;
      const rows = workers.reduce((n, w) => n + w.lanes, 0);
      const tall = this.canvas.classList.contains("tall");
      const axisH = 22, gutter = 140, cssW = this.canvas.clientWidth;
      const rowH = tall ? Math.max(6, Math.min(28, Math.floor(480 / Math.max(rows, 1))))
                        : (rows > 40 ? 8 : 16);
      const cssH = Math.max(80, rows * rowH + axisH + 4);
      this.canvas.style.height = cssH + "px";
      const dpr = window.devicePixelRatio || 1;
      if (this.canvas.width !== Math.round(cssW * dpr)) this.canvas.width = Math.round(cssW * dpr);
      if (this.canvas.height !== Math.round(cssH * dpr)) this.canvas.height = Math.round(cssH * dpr);
      const ctx = this.canvas.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, cssW, cssH);
      const css = getComputedStyle(document.documentElement);
      const now = this.serverNow(), t0 = now - this.window;
      const plotW = cssW - gutter - 8;
      const x = t => gutter + (t - t0) / this.window * plotW;
      const rowTop = [];
      let y = 2;
      ctx.font = "11px " + css.getPropertyValue("--mono");
      ctx.textBaseline = "middle";
      workers.forEach((w, i) => {
        rowTop.push(y);
        const h = w.lanes * rowH;
        if (i % 2 === 0) {
          ctx.fillStyle = css.getPropertyValue("--track");
          ctx.fillRect(gutter, y, plotW, h);
        }
        ctx.fillStyle = css.getPropertyValue(w.connected ? "--text" : "--muted");
        ctx.fillText(this.clip(ctx, w.name, gutter - 10), 4, y + Math.min(h, rowH) / 2);
        y += h;
      });
      this.layout = {rowTop, rowH, x, t0, plotW, gutter};
      for (const [wi, lane, start, stop, group, , erred] of this.data.tasks) {
        if (stop < t0) continue;
        const x0 = Math.max(gutter, x(start)), x1 = x(stop);
        ctx.fillStyle = erred ? css.getPropertyValue("--erred") : groupColor(group);
        ctx.fillRect(x0, rowTop[wi] + lane * rowH + 1, Math.max(1, x1 - x0), rowH - 2);
      }
      this.drawAxis(ctx, css, y + 2, t0);
    }

    drawAxis(ctx, css, y, t0) {
      const {x, gutter, plotW} = this.layout;
      ctx.strokeStyle = css.getPropertyValue("--line");
      ctx.beginPath(); ctx.moveTo(gutter, y); ctx.lineTo(gutter + plotW, y); ctx.stroke();
      ctx.fillStyle = css.getPropertyValue("--muted");
      const step = [1, 2, 5, 10, 15, 30, 60, 120, 300].find(s => this.window / s <= 8) || 600;
      ctx.textAlign = "center";
      for (let ago = 0; ago <= this.window + 1e-9; ago += step) {
        const px = x(t0 + this.window - ago);
        ctx.fillText(ago === 0 ? "now" : `-${ago} s`, Math.min(px, gutter + plotW - 12), y + 10);
      }
      ctx.textAlign = "left";
    }

    clip(ctx, text, width) {
      if (ctx.measureText(text).width <= width) return text;
      while (text.length > 1 && ctx.measureText("…" + text).width > width) text = text.slice(1);
      return "…" + text;
    }

    hover(event) {
      const tip = $("#tooltip");
      if (!this.layout || !this.data) return;
      const rect = this.canvas.getBoundingClientRect();
      const px = event.clientX - rect.left, py = event.clientY - rect.top;
      const {rowTop, rowH, x} = this.layout;
      const hit = this.data.tasks.find(([wi, lane, start, stop]) => {
        const top = rowTop[wi] + lane * rowH;
        return py >= top && py < top + rowH && px >= x(start) - 2 && px <= Math.max(x(stop), x(start) + 1) + 2;
      });
      if (!hit) { tip.hidden = true; return; }
      const [wi, , start, stop, group, key, erred] = hit;
      tip.textContent = `${key}\n${group} · ${fmtSeconds(stop - start)}${erred ? " · erred" : ""} · ` +
                        this.data.workers[wi].name;
      tip.style.whiteSpace = "pre";
      tip.style.left = (event.clientX + 12) + "px";
      tip.style.top = (event.clientY + 12) + "px";
      tip.hidden = false;
    }
  }

  const streams = {
    status: new TaskStream($("#stream-small"), $("#stream-small-legend")),
    tasks: new TaskStream($("#stream-large"), $("#stream-large-legend")),
  };
  $("#stream-window").addEventListener("change", e => {
    streams.tasks.window = Number(e.target.value);
    streams.tasks.data = null;
    streams.tasks.refresh().catch(() => {});
  });

  function animate() {  // keep the stream scrolling between refreshes, about 10 frames a second
    const stream = streams[page];
    if (stream && !document.hidden) stream.draw();
    setTimeout(() => requestAnimationFrame(animate), 100);
  }

  // -- jobs view -----------------------------------------------------------------------------

  function renderJobs(data) {
    const empty = $("#jobs-empty");
    const table = $("#jobs-table");
    if (!data.available) {
      $("#jobs-hint").textContent = "";
      $("#job-counts").replaceChildren();
      table.hidden = true;
      empty.hidden = false;
      empty.textContent = "This scheduler was not started by a cluster object, so it has no " +
                          "jobs of its own: its workers connected from elsewhere.";
      return;
    }
    $("#jobs-hint").textContent = `${data.jobs.length} job${data.jobs.length === 1 ? "" : "s"}`;
    $("#job-counts").replaceChildren(...Object.entries(data.counts).sort().map(
      ([state, n]) => el("span", "badge " + state, `${n} ${state}`)));
    table.hidden = data.jobs.length === 0;
    empty.hidden = data.jobs.length !== 0;
    empty.textContent = "No jobs yet: scale the cluster, e.g. cluster.scale(jobs=2).";
    keyed($("#jobs-table tbody"), data.jobs, j => j.name, () => {
      const tr = el("tr");
      for (const cls of ["mono", "mono", "", "reason", "num", ""]) tr.append(el("td", cls));
      return tr;
    }, (tr, j) => {
      const c = tr.children;
      c[0].textContent = j.name;
      c[1].textContent = j.id ?? "";
      c[2].replaceChildren(el("span", "badge " + j.state, j.state + (j.stale ? " (stale)" : "")));
      c[3].textContent = j.reason || "";
      c[4].textContent = `${(j.workers || []).length} / ${j.expected_workers ?? "?"}`;
      if (j.logs === false) c[5].replaceChildren();
      else {
        // a batch job's output file: its name shown, its path on hover
        const a = el("a", null, j.output ? j.output.split("/").pop() : "log");
        if (j.output) a.title = j.output;
        a.href = "logs?name=" + encodeURIComponent(j.name);
        a.dataset.nav = "logs";
        c[5].replaceChildren(a);
      }
    });
  }

  // -- logs view -----------------------------------------------------------------------------

  const logs = {name: null, text: ""};

  function selectedLog() {
    return new URLSearchParams(location.search).get("name") || logs.name || "scheduler";
  }

  async function refreshLogs() {
    const list = (await getJSON("api/logs")).logs;
    const name = selectedLog();
    logs.name = name;
    keyed($("#log-list"), list, n => n, n => {
      const li = el("li");
      const a = el("a", null, n);
      a.href = "logs?name=" + encodeURIComponent(n);
      a.dataset.nav = "logs";
      li.append(a);
      return li;
    }, (li, n) => li.firstChild.classList.toggle("active", n === name));
    $("#log-name").textContent = name;
    let data;
    try {
      data = await getJSON("api/logs?name=" + encodeURIComponent(name));
    } catch (e) {
      if (!(e instanceof HttpError && e.status === 404)) throw e;
      data = {text: `(no log named ${name})`, truncated: false};
    }
    logs.text = (data.truncated ? "… (earlier lines cut)\n" : "") + data.text;
    renderLog();
  }

  function renderLog() {
    const pre = $("#log-text");
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
    const filter = $("#log-filter").value.toLowerCase();
    const lines = logs.text.split("\n").filter(l => !filter || l.toLowerCase().includes(filter));
    pre.replaceChildren(...lines.map(line => {
      const cls = /\b(ERROR|CRITICAL|Traceback)\b/.test(line) ? "error"
                : /\bWARNING\b/.test(line) ? "warn" : null;
      return cls ? el("span", cls, line + "\n") : line + "\n";
    }));
    if (!lines.join("")) pre.textContent = filter ? "(no line matches)" : "(empty)";
    if (atBottom && $("#log-follow").checked) pre.scrollTop = pre.scrollHeight;
  }
  $("#log-filter").addEventListener("input", renderLog);

  // -- views and navigation ------------------------------------------------------------------

  const views = {
    status: async () => {
      const [progress, workers] = await Promise.all([getJSON("api/progress"), getJSON("api/workers"),
                                                     streams.status.refresh()]);
      renderProgress(progress.groups);
      renderWorkerBars(workers.workers);
    },
    workers: async () => {
      lastWorkers = (await getJSON("api/workers")).workers;
      renderWorkersTable(lastWorkers);
    },
    tasks: () => streams.tasks.refresh(),
    jobs: async () => renderJobs(await getJSON("api/jobs")),
    logs: async () => {
      if ($("#log-follow").checked || logs.name !== selectedLog()) await refreshLogs();
    },
  };

  let page = null;

  function pageFromPath() {
    const last = location.pathname.replace(/\/+$/, "").split("/").pop();
    return PAGES.includes(last) ? last : "status";
  }

  function show(name) {
    page = name;
    for (const view of $$(".view")) view.hidden = view.dataset.view !== name;
    for (const a of $$("nav a")) a.classList.toggle("active", a.dataset.nav === name);
    tick();
  }

  document.addEventListener("click", event => {
    const a = event.target.closest("a[data-nav]");
    if (!a || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    history.pushState(null, "", a.getAttribute("href"));
    show(a.dataset.nav);
  });
  window.addEventListener("popstate", () => show(pageFromPath()));

  let busy = false;

  async function tick() {
    if (busy) return;
    busy = true;
    try {
      const [summary] = await Promise.all([getJSON("api/summary"), views[page]()]);
      renderSummary(summary);
      setLive(true, "live");
      document.body.dataset.ready = "true";
    } catch (e) {
      if (e instanceof HttpError && e.status === 403) {
        setLive(false, "token needed: open the dashboard link");
      } else if (e instanceof HttpError || e.message === "Failed to fetch") {
        setLive(false, "scheduler unreachable", String(e));
      } else {
        setLive(false, "page error", String(e));
        console.error(e);
      }
    } finally {
      busy = false;
    }
  }

  show(pageFromPath());
  setInterval(() => { if (!document.hidden) tick(); }, TICK_MS);
  requestAnimationFrame(animate);
})();
