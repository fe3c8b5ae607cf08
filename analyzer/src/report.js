// The report page of `ficus analyze --format html`: draws the service graph from the
// embedded data and the layout computed at report time, shows a service's or a
// dependency's details, and runs the what-if (move a unit, recompute the metrics and the
// dependencies exactly as the analyzer does for a partition file, export the partition).
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("ficus-data").textContent);
  const R = D.report;
  const NS = "http://www.w3.org/2000/svg";
  const units = R.units;
  const names = R.services.map((s) => s.name);
  const svcIndex = new Map(names.map((n, i) => [n, i]));
  const kernel = R.services.findIndex((s) => s.kernel);
  const unitIndex = new Map(units.map((u, i) => [u.id, i]));
  const epKey = (e) => [e.method, e.path, e.handler, e.file, e.line].join("\u0000");
  const epIndex = new Map(R.endpoints.map((e, i) => [epKey(e), i]));

  // The proposed partition, and the one being edited.
  const proposed = { unit: new Array(units.length).fill(0), ep: new Array(R.endpoints.length).fill(0) };
  R.services.forEach((s, i) => {
    s.units.forEach((u) => { const k = unitIndex.get(u.id); if (k !== undefined) proposed.unit[k] = i; });
    s.endpoints.forEach((e) => { const k = epIndex.get(epKey(e)); if (k !== undefined) proposed.ep[k] = i; });
  });
  const state = { unit: proposed.unit.slice(), ep: proposed.ep.slice(), moves: 0, selected: null };

  const el = (tag, attrs, ...kids) => {
    const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "onclick" || k === "onchange") e[k] = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const r3 = (x) => Math.sign(x) * Math.round(Math.abs(x) * 1000) / 1000;
  const loc = (e) => el("span", { class: "loc" }, `${e.file}:${e.line}`);

  // ---- The analysis of a partition, as the analyzer computes it (services.rs) ----

  function mono2micro(part) {
    const k = new Set(part).size;
    const size = new Map();
    part.forEach((c) => size.set(c, (size.get(c) || 0) + 1));
    const pairs = new Set(), volume = new Map();
    for (const [a, b, n] of D.calls) {
      if (a === b || n === 0) continue;
      pairs.add(Math.min(a, b) * units.length + Math.max(a, b));
      const key = a * units.length + b;
      volume.set(key, (volume.get(key) || 0) + n);
    }
    const mu = new Map(), sigma = new Map();
    let cross = 0;
    for (const p of pairs) {
      const a = Math.floor(p / units.length), b = p % units.length, ca = part[a], cb = part[b];
      if (ca === cb) mu.set(ca, (mu.get(ca) || 0) + 1);
      else {
        cross += 1;
        const key = Math.min(ca, cb) * names.length + Math.max(ca, cb);
        sigma.set(key, (sigma.get(key) || 0) + 1);
      }
    }
    let scoh = 0;
    for (const [c, n] of size) scoh += (mu.get(c) || 0) / (n * n);
    scoh /= Math.max(k, 1);
    let scop = 0;
    if (k > 1) {
      let ordered = 0;
      for (const [key, s] of sigma) {
        const a = Math.floor(key / names.length), b = key % names.length;
        ordered += 2 * s / (2 * size.get(a) * size.get(b));
      }
      scop = ordered / k / (k - 1) * 2;
    }
    let total = 0, inter = 0;
    for (const [key, n] of volume) {
      const w = Math.log(n) + 1;
      total += w;
      if (part[Math.floor(key / units.length)] !== part[key % units.length]) inter += w;
    }
    let all = 0, mid = 0;
    for (const s of size.values()) { all += s; if (s >= 5 && s <= 20) mid += s; }
    return {
      sm: scoh - scop,
      icp: total > 0 ? inter / total : 0,
      ifn: k > 0 ? cross / k : 0,
      ned: all > 0 && mid > 0 ? 1 - mid / all : 1,
    };
  }

  function modularity(part) {
    let m = 0;
    const deg = new Array(units.length).fill(0), inside = new Map(), tot = new Map();
    for (const [a, b, w] of D.edges) {
      m += w; deg[a] += w; deg[b] += w;
      if (part[a] === part[b]) inside.set(part[a], (inside.get(part[a]) || 0) + w);
    }
    if (m <= 0) return 0;
    part.forEach((c, i) => tot.set(c, (tot.get(c) || 0) + deg[i]));
    let q = 0;
    for (const [c, d] of tot) q += (inside.get(c) || 0) / m - Math.pow(d / (2 * m), 2);
    return q;
  }

  function metricsOf(part) {
    const m = mono2micro(part);
    return { services: names.length, modularity: r3(modularity(part)), sm: r3(m.sm), icp: r3(m.icp), ifn: r3(m.ifn), ned: r3(m.ned) };
  }

  // Dependencies, shared tables and service tables of a partition, by unit.
  function dependenciesOf(part) {
    const deps = new Map();
    const dep = (a, b) => {
      const key = a + "→" + b;
      if (!deps.has(key)) deps.set(key, { from: names[a], to: names[b], calls: 0, tables: new Set(), evidence: [] });
      return deps.get(key);
    };
    for (const [a, b, n, sites] of D.calls) {
      const sa = part[a], sb = part[b];
      if (sa === sb) continue;
      const d = dep(sa, sb);
      d.calls += n;
      d.evidence.push(...sites);
    }
    const touch = new Map();
    for (const [u, t, w] of D.accesses) {
      if (!touch.has(t)) touch.set(t, { readers: new Set(), writers: new Set() });
      touch.get(t)[w ? "writers" : "readers"].add(part[u]);
    }
    for (const [u, t, w, , sites] of D.accesses) {
      for (const wr of touch.get(t).writers) {
        if (wr === part[u]) continue;
        const d = dep(part[u], wr);
        d.tables.add(t);
        for (const s of sites) d.evidence.push({ file: s.file, line: s.line, what: `${w ? "writes" : "reads"} table ${t} (written by ${names[wr]})` });
      }
    }
    const list = [...deps.values()].map((d) => ({
      from: d.from, to: d.to, calls: d.calls, tables: [...d.tables].sort(),
      evidence: d.evidence.sort((x, y) => (x.file < y.file ? -1 : x.file > y.file ? 1 : x.line - y.line)).slice(0, 50),
    }));
    list.sort((x, y) => (x.from + "\u0000" + x.to < y.from + "\u0000" + y.to ? -1 : 1));
    const shared = [], tables = names.map(() => ({ owns: [], reads: [] }));
    for (const t of [...touch.keys()].sort()) {
      const { readers, writers } = touch.get(t);
      const readOnly = [...readers].filter((s) => !writers.has(s));
      for (const s of writers) tables[s].owns.push(t);
      for (const s of readOnly) tables[s].reads.push(t);
      if (new Set([...readers, ...writers]).size > 1) {
        shared.push({ table: t, writers: [...writers].map((s) => names[s]).sort(), readers: readOnly.map((s) => names[s]).sort() });
      }
    }
    return { dependencies: list, shared_tables: shared, tables };
  }

  // Least entangled first, as `extraction_order` in services.rs.
  function extractionOrder(deps, shared, unitCount) {
    const rows = names.map((n, i) => {
      let outCalls = 0, inCalls = 0;
      const outTo = new Set(), inFrom = new Set();
      for (const d of deps) {
        if (d.from === n && d.calls > 0) { outCalls += d.calls; outTo.add(d.to); }
        if (d.to === n && d.calls > 0) { inCalls += d.calls; inFrom.add(d.from); }
      }
      const tables = new Set(shared.filter((t) => t.writers.includes(n) || t.readers.includes(n)).map((t) => t.table));
      const score = outCalls + inCalls + 5 * tables.size;
      const sites = (k) => (k === 1 ? "1 call site" : `${k} call sites`);
      const why = [];
      if (outCalls > 0) why.push(`${sites(outCalls)} into ${[...outTo].sort().join(", ")}`);
      if (inCalls > 0) why.push(`${sites(inCalls)} from ${[...inFrom].sort().join(", ")}`);
      if (tables.size) why.push(`shares tables ${[...tables].sort().join(", ")}`);
      const isKernel = i === kernel;
      let text = why.length ? `entanglement ${score}: ${why.join("; ")}` : "no calls or tables shared with other services";
      if (isKernel) text = "shared kernel (code every service uses): stays in the monolith or becomes a library" + (why.length ? "; " + why.join("; ") : "");
      return { isKernel, score, units: unitCount[i], name: n, why: text };
    });
    rows.sort((a, b) => (a.isKernel - b.isKernel) || (a.score - b.score) || (a.units - b.units) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return rows.map((r, i) => ({ service: r.name, rank: i + 1, why: r.why }));
  }

  // The view of the current partition: the report's own until something moves.
  function current() {
    if (state.moves === 0) {
      return {
        metrics: R.metrics, dependencies: R.dependencies, shared_tables: R.shared_tables,
        extraction_order: R.extraction_order, tables: R.services.map((s) => s.tables),
      };
    }
    const d = dependenciesOf(state.unit);
    const count = names.map(() => 0);
    state.unit.forEach((s) => { count[s] += 1; });
    return { metrics: metricsOf(state.unit), ...d, extraction_order: extractionOrder(d.dependencies, d.shared_tables, count) };
  }

  // ---- Drawing ----

  const [W, H] = D.size;
  const lines = names.map(() => 0);
  function serviceLines() {
    lines.fill(0);
    state.unit.forEach((s, u) => { lines[s] += units[u].lines; });
  }
  const maxLines = () => Math.max(1, ...lines.filter((_, i) => i !== kernel));
  // A big graph keeps its size (the pane scrolls), draws only its strongest dependencies
  // and those of the selected service, and its shared tables on demand.
  const big = names.length > D.small;
  const MAX_EDGES = 100;
  const radius = (i) => 14 + 26 * Math.sqrt(lines[i] / maxLines());

  function drawGraph(view) {
    serviceLines();
    const pane = document.getElementById("graph-pane");
    const svg = el("svg:svg", { id: "graph", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "service graph" });
    if (big) svg.setAttribute("style", `width:${W}px;min-width:${W}px`);
    const chosen = state.selected && state.selected.startsWith("svc:") ? state.selected.slice(4) : null;
    svg.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#8a8a8a" }))));
    const pos = D.layout;
    const border = (i, tx, ty) => {
      const [x, y] = pos[i];
      if (i === kernel) return [x + Math.max(-150, Math.min(150, tx - x)), y + (ty < y ? -20 : 20)];
      const dx = tx - x, dy = ty - y, len = Math.hypot(dx, dy) || 1, r = radius(i) + 2;
      return [x + dx / len * r, y + dy / len * r];
    };
    // Shared tables: a small square at the middle of the services touching them.
    const tablesOn = document.getElementById("show-tables");
    const showTables = tablesOn ? tablesOn.checked : !big;
    if (showTables) {
      view.shared_tables.slice(0, 60).forEach((t, k) => {
        const who = [...t.writers.map((n) => [svcIndex.get(n), true]), ...t.readers.map((n) => [svcIndex.get(n), false])];
        let cx = 0, cy = 0;
        for (const [s] of who) { cx += pos[s][0]; cy += pos[s][1]; }
        cx = cx / who.length + 14 * Math.cos(k * 2.4); cy = cy / who.length + 14 * Math.sin(k * 2.4);
        for (const [s, writes] of who) {
          svg.append(el("svg:line", { class: "table-link" + (writes ? "" : " read"), x1: cx, y1: cy, x2: pos[s][0], y2: pos[s][1] }));
        }
        const g = el("svg:g", { class: "table-node", "data-table": t.table },
          el("svg:title", {}, `table ${t.table}: written by ${t.writers.join(", ") || "-"}; read by ${t.readers.join(", ") || "-"}`),
          el("svg:rect", { x: cx - 5, y: cy - 5, width: 10, height: 10 }),
          el("svg:text", { x: cx, y: cy + 16 }, t.table));
        svg.append(g);
      });
    }
    let drawn = view.dependencies;
    if (big) {
      const weight = (d) => d.calls + 5 * d.tables.length;
      const touches = (d) => d.from === chosen || d.to === chosen;
      const strongest = new Set(view.dependencies.filter((d) => svcIndex.get(d.from) !== kernel && svcIndex.get(d.to) !== kernel)
        .sort((x, y) => weight(y) - weight(x)).slice(0, MAX_EDGES));
      drawn = view.dependencies.filter((d) => touches(d) || strongest.has(d));
    }
    for (const d of drawn) {
      const a = svcIndex.get(d.from), b = svcIndex.get(d.to);
      const [x1, y1] = border(a, pos[b][0], pos[b][1]), [x2, y2] = border(b, pos[a][0], pos[a][1]);
      // Bend each edge a little so a → b and b → a stay apart.
      const mx = (x1 + x2) / 2 + (y2 - y1) * 0.12, my = (y1 + y2) / 2 - (x2 - x1) * 0.12;
      const weight = d.calls + 5 * d.tables.length;
      const path = el("svg:path", {
        class: "dep" + (d.calls === 0 ? " tables" : "") + (state.selected === "dep:" + d.from + "→" + d.to ? " selected" : ""),
        d: `M${x1},${y1} Q${mx},${my} ${x2},${y2}`, "stroke-width": Math.min(9, 1 + 1.5 * Math.log2(1 + weight)),
        "stroke-opacity": chosen && (d.from === chosen || d.to === chosen) ? 0.9 : a === kernel || b === kernel ? 0.25 : big ? 0.35 : 0.6, "marker-end": "url(#arrow)", "data-from": d.from, "data-to": d.to,
      }, el("svg:title", {}, `${d.from} → ${d.to}: ${d.calls} calls${d.tables.length ? "; tables " + d.tables.join(", ") : ""}`));
      path.onclick = () => showDependency(d.from, d.to);
      svg.append(path);
    }
    names.forEach((n, i) => {
      const [x, y] = pos[i];
      const eps = state.ep.filter((s) => s === i).length;
      const count = state.unit.filter((s) => s === i).length;
      const moved = state.unit.some((s, u) => s === i && proposed.unit[u] !== i);
      const g = el("svg:g", { class: "svc" + (i === kernel ? " kernel" : "") + (moved ? " moved" : "") + (state.selected === "svc:" + n ? " selected" : ""), "data-service": n },
        el("svg:title", {}, `${n}: ${count} units, ${lines[i]} lines, ${eps} endpoints`));
      if (i === kernel) {
        g.append(el("svg:rect", { x: x - 150, y: y - 20, width: 300, height: 40, rx: 8 }),
          el("svg:text", { x, y: y - 2 }, `shared kernel: ${n}`),
          el("svg:text", { class: "sub", x, y: y + 12 }, `${count} units · ${lines[i]} lines · stays or becomes a library`));
      } else {
        const r = radius(i);
        g.append(el("svg:circle", { cx: x, cy: y, r }),
          el("svg:text", { x, y: y - r - 6 }, n),
          el("svg:text", { class: "sub", x, y: y + 4 }, `${eps} ep · ${count} u`));
      }
      g.onclick = () => showService(n);
      svg.append(g);
    });
    const hidden = view.dependencies.length - drawn.length;
    pane.replaceChildren(svg, el("div", { class: "legend" },
      "Circles: services, sized by lines of code (click for details). Arrows: dependencies, thicker with more call sites; dashed orange: through tables only. Squares: shared tables (dashed link: reads). Grey band: the shared kernel. ",
      hidden > 0 ? `${drawn.length} of ${view.dependencies.length} dependencies drawn: the ${MAX_EDGES} strongest between services, and all of the selected service's. ` : "",
      el("label", {}, el("input", { type: "checkbox", id: "show-tables", ...(showTables ? { checked: "" } : {}) }), " show shared tables")));
    document.getElementById("show-tables").onchange = () => redraw();
  }

  function drawMetrics(view) {
    const better = { modularity: 1, sm: 1, icp: -1, ifn: -1, ned: -1 };
    const box = document.getElementById("metrics");
    box.replaceChildren();
    for (const k of ["services", "modularity", "sm", "icp", "ifn", "ned"]) {
      const v = view.metrics[k], was = R.metrics[k];
      const span = el("span", { class: "m" }, `${k === "services" ? "services" : k.toUpperCase().replace("MODULARITY", "modularity")} `, el("b", { id: "m-" + k }, String(v)));
      if (state.moves > 0 && better[k] && v !== was) {
        const good = (v - was) * better[k] > 0;
        span.append(el("span", { class: good ? "better" : "worse" }, ` (${v > was ? "+" : ""}${r3(v - was)})`));
      }
      box.append(span);
    }
    box.append(el("span", { class: "m" }, `view: ${state.moves ? "edited partition" : R.view.used}`));
    const w = document.getElementById("whatif");
    const reset = el("button", { id: "reset", type: "button" }, "Reset");
    reset.onclick = () => { state.unit = proposed.unit.slice(); state.ep = proposed.ep.slice(); state.moves = 0; redraw(); };
    const exp = el("button", { id: "export", type: "button" }, "Export partition");
    exp.onclick = exportPartition;
    w.replaceChildren(
      state.moves ? `What-if: ${state.moves} move${state.moves === 1 ? "" : "s"}; metrics and dependencies recomputed over units.` : "What-if: move a unit to another service from its service's panel.",
      reset, exp);
  }

  function partitionFile() {
    return {
      version: D.partition_version, root: R.root,
      services: names.map((n, i) => {
        const s = { name: n };
        if (i === kernel) s.kernel = true;
        s.units = units.filter((u, k) => state.unit[k] === i).map((u) => u.id);
        s.endpoints = R.endpoints.filter((e, k) => state.ep[k] === i).map((e) => `${e.method} ${e.path}`);
        return s;
      }),
    };
  }

  function exportPartition() {
    const text = JSON.stringify(partitionFile(), null, 1) + "\n";
    let area = document.getElementById("partition-json");
    if (!area) { area = el("textarea", { id: "partition-json", readonly: "" }); document.getElementById("whatif").append(area); }
    area.value = text;
    const a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })), download: "partition.json" });
    document.body.append(a);
    a.click();
    a.remove();
  }

  // ---- The details panel ----

  function section(title, count, open, ...body) {
    const d = el("details", open || count <= 25 ? { open: "" } : {}, el("summary", {}, `${title} (${count})`), ...body);
    return d;
  }

  function showService(n, view = current()) {
    state.selected = "svc:" + n;
    const i = svcIndex.get(n), s = R.services[i];
    const order = view.extraction_order.find((e) => e.service === n);
    const eps = R.endpoints.map((e, k) => [e, k]).filter(([, k]) => state.ep[k] === i);
    const epRows = el("table", {}, el("tr", {}, el("th", {}, "method"), el("th", {}, "path"), el("th", {}, "handler")),
      ...eps.slice(0, 500).map(([e]) => el("tr", {}, el("td", {}, e.method), el("td", {}, el("code", {}, e.path)), el("td", {}, el("code", {}, e.handler.split("::").slice(-2).join("::")), " ", loc(e)))));
    const tables = view.tables[i];
    const unitList = el("table", { id: "units" }, el("tr", {}, el("th", {}, "unit"), el("th", {}, "lines"), el("th", {}, "move to")),
      ...units.map((u, k) => [u, k]).filter(([, k]) => state.unit[k] === i).map(([u, k]) => {
        const sel = el("select", { class: "move", "data-unit": u.id }, ...names.map((m, j) => el("option", j === i ? { value: m, selected: "" } : { value: m }, m)));
        sel.onchange = () => moveUnit(k, svcIndex.get(sel.value));
        return el("tr", {}, el("td", {}, el("code", {}, u.id), proposed.unit[k] !== i ? el("span", { class: "badge" }, "moved here") : "", " ", el("span", { class: "loc" }, u.file)), el("td", {}, String(u.lines)), el("td", {}, sel));
      }));
    const fns = (s.functions || []).map((f) => el("li", {}, el("code", {}, f.name.split("::").slice(-2).join("::")), " ", loc(f), ` (share ${f.share})`));
    const depLink = (d, other) => {
      const a = el("a", { class: "dep-link" }, other);
      a.onclick = () => showDependency(d.from, d.to);
      return el("li", {}, a, `: ${d.calls} call sites${d.tables.length ? ", tables " + d.tables.join(", ") : ""}`, d.evidence.length ? el("div", {}, "e.g. ", loc(d.evidence[0]), " ", d.evidence[0].what) : "");
    };
    const out = view.dependencies.filter((d) => d.from === n), inc = view.dependencies.filter((d) => d.to === n);
    document.getElementById("details").replaceChildren(
      el("h2", { id: "detail-title" }, n, i === kernel ? el("span", { class: "badge" }, "shared kernel") : ""),
      el("p", { id: "detail-order" }, order ? `Extraction order: #${order.rank} of ${names.length} — ${order.why}` : ""),
      el("p", {}, `Tables: owns ${tables.owns.join(", ") || "none"}; reads ${tables.reads.join(", ") || "none"}.`),
      section("Endpoints", eps.length, false, epRows),
      section("Units", unitList.rows.length - 1, true, unitList),
      fns.length ? section("Lower-layer functions that go with it (as proposed)", fns.length, false, el("ul", {}, ...fns)) : "",
      section("Depends on", out.length, true, el("ul", {}, ...out.map((d) => depLink(d, d.to)))),
      section("Used by", inc.length, true, el("ul", {}, ...inc.map((d) => depLink(d, d.from)))));
    drawGraph(view);
  }

  function showDependency(from, to, view = current()) {
    state.selected = "dep:" + from + "→" + to;
    const d = view.dependencies.find((x) => x.from === from && x.to === to);
    const body = d
      ? [el("p", {}, `${d.calls} call sites${d.tables.length ? "; tables of " + to + " that " + from + " touches: " + d.tables.join(", ") : ""}.`),
        el("ul", { id: "evidence" }, ...d.evidence.map((e) => el("li", {}, loc(e), " ", e.what))),
        d.evidence.length < d.calls + d.tables.length ? el("p", { class: "loc" }, "The first call sites of each pair of units are shown; the JSON report lists up to 50.") : ""]
      : [el("p", {}, "No dependency any more.")];
    document.getElementById("details").replaceChildren(el("h2", { id: "detail-title" }, `${from} → ${to}`), ...body);
    drawGraph(view);
  }

  function moveUnit(u, to) {
    const from = state.unit[u];
    if (from === to) return;
    state.unit[u] = to;
    // The unit's endpoints that were with it go along.
    R.endpoints.forEach((e, k) => { if (unitIndex.get(e.unit) === u && state.ep[k] === from) state.ep[k] = to; });
    state.moves += 1;
    redraw();
  }

  function redraw() {
    const view = current();
    drawMetrics(view);
    // One analysis of the partition per redraw, shared by the panel and the graph.
    if (state.selected && state.selected.startsWith("svc:")) showService(state.selected.slice(4), view);
    else if (state.selected && state.selected.startsWith("dep:")) showDependency(...state.selected.slice(4).split("→"), view);
    else drawGraph(view);
  }

  // `report.html#service=NAME` opens with that service selected (a link to share).
  const linked = decodeURIComponent((location.hash.match(/^#service=(.+)$/) || [])[1] || "");
  if (svcIndex.has(linked)) state.selected = "svc:" + linked;
  redraw();
  // For tests and tools: the current partition's analysis and its partition file.
  window.ficus = { current, partitionFile };
  document.body.setAttribute("data-ready", String(Math.round(performance.now())));
  // The frame after the first drawing has been laid out and painted (for bench/report_open.py).
  requestAnimationFrame(() => setTimeout(() => document.body.setAttribute("data-painted", String(Math.round(performance.now()))), 0));
})();
