// The status page: reads /status (the admin API's JSON) every few seconds
// and draws it. No framework, no build step; every value from the server is
// set as text, never as markup.
"use strict";

const REFRESH_MS = 5000;
const WINDOW_MS = 10 * 60 * 1000;
const COLORS = ["#2f6fdd", "#e0672b", "#2a9d5b", "#9c4dc4", "#c9a227", "#d1477a", "#1b9aaa", "#6b7385"];
const SVG = "http://www.w3.org/2000/svg";

let loads = 0;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function num(value) {
  return el("td", value, "num");
}

function fill(table, rows, empty) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const td = el("td", empty, "muted");
    td.colSpan = document.querySelectorAll(`#${table} thead th`).length;
    body.appendChild(row([td]));
  }
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function colorOf(names, name) {
  return COLORS[names.indexOf(name) % COLORS.length];
}

function renderRoutes(routes) {
  fill("routes", routes.map((r) => {
    const match = [r.hosts.join(", "), r.path, r.methods.join(" ")].filter(Boolean).join("  ");
    const target = r.respond ? `responds ${r.respond}` : r.upstreams.join(", ");
    const name = el("td");
    name.appendChild(el("strong", r.name));
    name.dataset.route = r.name;
    return row([name, el("td", match), el("td", target), el("td", r.filters.join(" → ") || "–"),
      num(r.requests), num(r.errors)]);
  }), "no routes");
}

function renderUpstreams(upstreams) {
  const rows = [];
  for (const u of upstreams) {
    for (const t of u.targets) {
      const health = el("td", t.health, `health-${t.health}`);
      health.dataset.target = t.address;
      rows.push(row([u.name, el("td", t.address), health, num(t.weight), num(t.in_flight), num(t.ejections)]));
    }
  }
  fill("upstreams", rows, "no upstreams");
}

function renderPlugins(plugins) {
  fill("plugins", plugins.map((p) => row([el("td", p.name), num(p.filters), num(p.vms), num(bytes(p.memory_bytes))])),
    "no plugins");
}

function renderReloads(reloads) {
  fill("reloads", reloads.map((r) => row([el("td", time(r.at)), num(r.generation),
    el("td", r.outcome, `outcome-${r.outcome}`), el("td", r.cause), el("td", r.reason || "", "muted")])),
    "no reloads since start");
}

// One line per route over the last ten minutes; `key` picks the rate.
function renderChart(id, points, key, names, now) {
  const width = 800, height = 170, left = 44, bottom = 18, top = 8;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  let max = 0;
  for (const p of points) for (const name of names) max = Math.max(max, p.routes[name]?.[key] ?? 0);
  const scale = max > 0 ? max * 1.1 : 1;
  const x = (at) => left + ((at - (now - WINDOW_MS)) / WINDOW_MS) * (width - left - 4);
  const y = (v) => top + (1 - v / scale) * (height - top - bottom);
  const line = (x1, y1, x2, y2) => {
    const l = document.createElementNS(SVG, "line");
    Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
    l.setAttribute("class", "axis");
    svg.appendChild(l);
  };
  const label = (tx, ty, text, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", tx);
    t.setAttribute("y", ty);
    t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  };
  line(left, y(0), width - 4, y(0));
  line(left, top, left, y(0));
  label(left - 4, top + 8, scale.toPrecision(2), "end");
  label(left - 4, y(0), "0", "end");
  label(left, height - 4, "10 min ago", "start");
  label(width - 4, height - 4, "now", "end");
  let drawn = 0;
  for (const name of names) {
    const coords = points.filter((p) => p.routes[name] !== undefined && p.at >= now - WINDOW_MS)
      .map((p) => `${x(p.at).toFixed(1)},${y(p.routes[name][key]).toFixed(1)}`);
    if (coords.length === 0) continue;
    drawn += coords.length;
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", coords.join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", colorOf(names, name));
    path.setAttribute("stroke-width", "2");
    path.setAttribute("vector-effect", "non-scaling-stroke");
    path.dataset.route = name;
    svg.appendChild(path);
  }
  svg.dataset.points = String(drawn);
  svg.dataset.max = String(max);
  document.getElementById(id).replaceChildren(svg);
}

function renderLegend(names) {
  document.getElementById("legend").replaceChildren(...names.map((name) => {
    const span = el("span", name);
    span.style.setProperty("--swatch", colorOf(names, name));
    return span;
  }));
}

function render(status) {
  document.getElementById("generation").textContent = `generation ${status.generation}`;
  document.body.dataset.generation = String(status.generation);
  renderRoutes(status.routes);
  renderUpstreams(status.upstreams);
  renderPlugins(status.plugins);
  renderReloads(status.reloads);
  const names = status.routes.map((r) => r.name);
  renderChart("requests-chart", status.rates.points, "requests", names, status.now);
  renderChart("errors-chart", status.rates.points, "errors", names, status.now);
  renderLegend(names);
  document.getElementById("updated").textContent = `updated ${time(status.now)}`;
}

async function refresh() {
  const error = document.getElementById("error");
  try {
    const response = await fetch("/status", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`/status answered ${response.status}`);
    render(await response.json());
    error.hidden = true;
    loads += 1;
    document.body.dataset.loads = String(loads);
  } catch (e) {
    error.textContent = `Cannot read the status: ${e.message}`;
    error.hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
