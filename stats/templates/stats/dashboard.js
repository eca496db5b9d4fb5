// Draws the stats blob. Every piece of data goes into the page as text (textContent, an
// attribute, or an SVG text node), never as markup, so a username like "<img onerror=...>"
// shows as itself. Served as its own file (no inline script, ready for a Content-Security-
// Policy); configuration comes from data- attributes of <main>.
// (Rendered by Django's template engine: no double braces or brace-percent in here.)
(function () {
  "use strict";

  const main = document.getElementById("dashboard");
  const config = {
    source: main.dataset.source,
    loginUrl: main.dataset.loginUrl,
    refreshMs: Number(main.dataset.refreshSeconds) * 1000,
    staleAfterSeconds: Number(main.dataset.staleAfterSeconds),
  };
  const SCHEMA_VERSION = 1;
  const SVG = "http://www.w3.org/2000/svg";
  const EMPTY = "No messages yet.";
  const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const number = new Intl.NumberFormat();
  let blob = null;
  let useUtc = false;
  let timer = null;
  let drawnWidth = 0;

  function byId(id) {
    return document.getElementById(id);
  }

  function element(name, className, text) {
    const node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgElement(name, attributes) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      node.setAttribute(key, String(value));
    }
    return node;
  }

  function svgText(x, y, text, attributes) {
    const node = svgElement("text", Object.assign({ x: x, y: y }, attributes || {}));
    node.textContent = text;
    return node;
  }

  // --- time: the viewer's zone by default, UTC on request, the other one always in a title ---

  function zoneName() {
    return useUtc ? "UTC" : localZone;
  }

  function formatter(options, utc) {
    return new Intl.DateTimeFormat(undefined, Object.assign({ hourCycle: "h23" }, options, utc ? { timeZone: "UTC" } : {}));
  }

  function clock(date, utc) {
    return formatter({ hour: "2-digit", minute: "2-digit" }, utc === undefined ? useUtc : utc).format(date);
  }

  function moment(date, utc) {
    const options = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" };
    return formatter(options, utc === undefined ? useUtc : utc).format(date);
  }

  function minuteOf(date) {
    return useUtc ? date.getUTCMinutes() + 60 * date.getUTCHours() : date.getMinutes() + 60 * date.getHours();
  }

  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function setTime(id, iso) {
    const node = byId(id);
    if (!iso) {
      node.textContent = "none";
      node.removeAttribute("datetime");
      node.removeAttribute("title");
      return;
    }
    const date = new Date(iso);
    node.dateTime = iso;
    node.textContent = `${moment(date)} (${zoneName()})`;
    node.title = useUtc ? `${moment(date, false)} (${localZone})` : `${moment(date, true)} (UTC)`;
  }

  // --- status, staleness, problems ---

  function setStatus(text) {
    byId("status").textContent = text;
  }

  function piece(part) {
    if (typeof part === "string") return document.createTextNode(part);
    if (part.href) {
      const link = element("a", "", part.text);
      link.href = part.href;
      return link;
    }
    return element("code", "", part.code);
  }

  function showProblem(parts) {
    // Strings, {code} and {text, href} pieces: setting names show as code, never as markup.
    const banner = byId("problem");
    banner.replaceChildren(...parts.map(piece));
    banner.hidden = false;
  }

  function clearProblem() {
    byId("problem").hidden = true;
    byId("problem").replaceChildren();
  }

  function freshness() {
    if (!blob) return;
    const generated = new Date(blob.generated_at);
    const age = (Date.now() - generated.getTime()) / 1000;
    setStatus(`Generated ${ago(age)} ago · refreshes every minute`);
    const stale = byId("stale");
    const isStale = age > config.staleAfterSeconds;
    if (isStale) {
      const text =
        `Stale: these statistics were generated ${ago(age)} ago (${moment(generated)} ${zoneName()}). ` +
        `They should be renewed every minute: check that celery beat and a worker on the stats queue are running.`;
      // Only when it changes in substance, so a screen reader is not re-alerted every second.
      if (stale.hidden || stale.dataset.minutes !== String(Math.floor(age / 60))) {
        stale.textContent = text;
        stale.dataset.minutes = String(Math.floor(age / 60));
      }
    }
    stale.hidden = !isStale;
    main.dataset.stale = String(isStale);
  }

  // --- panels ---

  function emptyState(container, text) {
    container.removeAttribute("role");
    container.removeAttribute("aria-label");
    container.replaceChildren(element("p", "empty", text || EMPTY));
  }

  function fillTable(id, caption, headings, rows) {
    const table = byId(id);
    if (!rows.length) {
      table.replaceChildren();
      return;
    }
    const head = element("thead");
    const headRow = element("tr");
    headings.forEach((heading) => {
      const th = element("th", "", heading);
      th.scope = "col";
      headRow.append(th);
    });
    head.append(headRow);
    const body = element("tbody");
    rows.forEach((cells) => {
      const tr = element("tr");
      cells.forEach((cell, i) => {
        const td = element(i === 0 ? "th" : "td", "", cell);
        if (i === 0) td.scope = "row";
        tr.append(td);
      });
      body.append(tr);
    });
    table.replaceChildren(element("caption", "", caption), head, body);
  }

  function drawTotals(totals) {
    for (const name of ["messages", "users", "cities", "states"]) {
      byId("total-" + name).textContent = number.format(totals[name]);
    }
  }

  function drawBars(id, items, labelOf, caption, heading) {
    const container = byId(id);
    const tableId = id + "-table";
    if (!items.length) {
      emptyState(container);
      fillTable(tableId, caption, [], []);
      return;
    }
    const max = Math.max(1, ...items.map((item) => item.messages));
    container.replaceChildren(...items.map((item) => {
      const label = labelOf(item);
      const row = element("div", "row");
      const name = element("span", "name", label);
      name.title = label; // The full name on hover when the visible one is ellipsized.
      const track = element("span", "track");
      const fill = element("span", "fill");
      fill.style.width = `${Math.max(0.5, (100 * item.messages) / max)}%`;
      track.append(fill);
      row.append(name, track, element("span", "count", number.format(item.messages)));
      return row;
    }));
    // The bars are a picture; the table beside them holds every full name and count.
    container.setAttribute("role", "img");
    container.setAttribute("aria-label", `${caption}: ${labelOf(items[0])} leads with ${number.format(items[0].messages)}. Full data in the table that follows.`);
    fillTable(tableId, caption, [heading, "Messages"], items.map((item) => [labelOf(item), number.format(item.messages)]));
  }

  function niceStep(max, count) {
    const raw = max / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const factor of [1, 2, 5, 10]) {
      if (factor * power >= raw) return Math.max(1, factor * power);
    }
    return Math.max(1, 10 * power);
  }

  function drawRate(timeline) {
    const target = byId("rate-now");
    if (!timeline.length || !blob.totals.messages) {
      target.replaceChildren();
      return;
    }
    // The last point is the minute the blob was generated in, still counting: show the one before.
    const point = timeline[Math.max(0, timeline.length - 2)];
    const strong = element("strong", "", number.format(point.messages));
    const unit = point.messages === 1 ? "message/min" : "messages/min";
    target.replaceChildren(strong, document.createTextNode(` ${unit} (minute to ${clock(new Date(new Date(point.minute).getTime() + 60000))})`));
    target.title = "Messages stored in the last complete minute of the published timeline";
  }

  function drawTimeline(timeline) {
    const container = byId("timeline");
    const readout = byId("timeline-readout");
    readout.hidden = true;
    byId("timeline-minutes").textContent = String(timeline.length);
    drawRate(timeline);
    const rows = timeline.map((p) => [`${clock(new Date(p.minute))}`, number.format(p.messages)]);
    fillTable("timeline-table", `Messages per minute (${zoneName()})`, [`Minute (${zoneName()})`, "Messages"], rows);
    if (!blob.totals.messages || !timeline.some((p) => p.messages > 0)) {
      emptyState(container, blob.totals.messages ? `No messages in the last ${timeline.length} minutes.` : EMPTY);
      drawnWidth = 0;
      return;
    }
    // Drawn at the container's own pixel width (no viewBox scaling), so text keeps its CSS size
    // on a phone and on a wide screen alike; redrawn when the width changes.
    const width = Math.max(240, container.clientWidth);
    drawnWidth = container.clientWidth;
    const height = width < 500 ? 200 : 240;
    const left = 58, right = 12, top = 12, bottom = 46;
    const plotWidth = width - left - right, plotHeight = height - top - bottom;
    const step = niceStep(Math.max(1, ...timeline.map((p) => p.messages)), width < 500 ? 3 : 4);
    const max = Math.max(step, Math.ceil(Math.max(...timeline.map((p) => p.messages)) / step) * step);
    const dx = timeline.length > 1 ? plotWidth / (timeline.length - 1) : 0;
    const x = (i) => left + i * dx;
    const y = (v) => top + plotHeight - (v / max) * plotHeight;
    const first = new Date(timeline[0].minute), last = new Date(timeline[timeline.length - 1].minute);
    const peak = timeline.reduce((a, b) => (b.messages > a.messages ? b : a));
    const svg = svgElement("svg", {
      width: width, height: height, role: "img", tabindex: 0,
      "aria-label": `Line chart of messages per minute from ${clock(first)} to ${clock(last)} (${zoneName()}); ` +
        `peak ${number.format(peak.messages)} at ${clock(new Date(peak.minute))}. Full data in the table that follows.`,
    });
    // Gridlines and y ticks.
    for (let v = 0; v <= max; v += step) {
      svg.append(svgElement("line", { class: v ? "grid" : "axis", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      svg.append(svgText(left - 6, y(v) + 4, number.format(v), { "text-anchor": "end", class: "tick-y" }));
    }
    svg.append(svgElement("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotHeight }));
    // x ticks on round minutes, as many as fit with room for their labels.
    const spacing = 64;
    const everyOptions = [1, 2, 5, 10, 15, 30, 60];
    const every = everyOptions.find((m) => (timeline.length / m) * spacing <= plotWidth) || 60;
    timeline.forEach((p, i) => {
      const date = new Date(p.minute);
      if (minuteOf(date) % every !== 0) return;
      svg.append(svgElement("line", { class: "grid", x1: x(i), x2: x(i), y1: top, y2: top + plotHeight }));
      svg.append(svgElement("line", { class: "axis", x1: x(i), x2: x(i), y1: top + plotHeight, y2: top + plotHeight + 4 }));
      const anchor = x(i) < left + 20 ? "start" : x(i) > width - right - 20 ? "end" : "middle";
      svg.append(svgText(x(i), top + plotHeight + 17, clock(date), { "text-anchor": anchor, class: "tick-x" }));
    });
    // Axis titles.
    svg.append(svgText(-(top + plotHeight / 2), 14, "Messages per minute", { transform: "rotate(-90)", "text-anchor": "middle", class: "axis-title", id: "y-axis-title" }));
    svg.append(svgText(left + plotWidth / 2, height - 6, `Time (${zoneName()})`, { "text-anchor": "middle", class: "axis-title", id: "x-axis-title" }));
    // The data.
    const points = timeline.map((p, i) => `${x(i).toFixed(1)},${y(p.messages).toFixed(1)}`);
    const baseline = `${x(timeline.length - 1).toFixed(1)},${y(0)} ${x(0).toFixed(1)},${y(0)}`;
    svg.append(svgElement("polygon", { class: "area", points: `${points.join(" ")} ${baseline}` }));
    svg.append(svgElement("polyline", { class: "line", points: points.join(" ") }));
    // Hover (and arrow keys) read out one minute.
    const guide = svgElement("line", { class: "guide", y1: top, y2: top + plotHeight, visibility: "hidden" });
    const dot = svgElement("circle", { class: "dot", r: 4, visibility: "hidden" });
    const catcher = svgElement("rect", { x: left, y: top, width: plotWidth, height: plotHeight, fill: "transparent" });
    svg.append(guide, dot, catcher);
    let current = timeline.length - 1;

    function show(i) {
      current = Math.min(timeline.length - 1, Math.max(0, i));
      const p = timeline[current], date = new Date(p.minute);
      guide.setAttribute("x1", x(current));
      guide.setAttribute("x2", x(current));
      guide.setAttribute("visibility", "visible");
      dot.setAttribute("cx", x(current));
      dot.setAttribute("cy", y(p.messages));
      dot.setAttribute("visibility", "visible");
      const other = useUtc ? `${clock(date, false)} ${localZone}` : `${clock(date, true)} UTC`;
      readout.textContent = `${clock(date)} ${zoneName()} (${other}): ${number.format(p.messages)} messages`;
      readout.hidden = false;
      const half = readout.offsetWidth / 2;
      readout.style.left = `${Math.min(width - readout.offsetWidth, Math.max(0, x(current) - half))}px`;
      readout.style.top = `${Math.max(0, y(p.messages) - 40)}px`;
    }

    function hide() {
      guide.setAttribute("visibility", "hidden");
      dot.setAttribute("visibility", "hidden");
      readout.hidden = true;
    }

    svg.addEventListener("pointermove", (event) => {
      const box = svg.getBoundingClientRect();
      show(Math.round((event.clientX - box.left - left) / (dx || 1)));
    });
    svg.addEventListener("pointerleave", hide);
    svg.addEventListener("focus", () => show(current));
    svg.addEventListener("blur", hide);
    svg.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -timeline.length, End: timeline.length };
      if (event.key in moves) {
        event.preventDefault();
        show(current + moves[event.key]);
      }
    });
    container.replaceChildren(svg);
  }

  function drawAll() {
    if (!blob) return;
    const empty = !blob.totals.messages;
    drawTotals(blob.totals);
    drawTimeline(blob.timeline);
    drawBars("states", empty ? [] : blob.states, (s) => s.state, "Messages per state", "State");
    drawBars("top-cities", empty ? [] : blob.top_cities, (c) => `${c.city}, ${c.state}`, "Top cities", "City");
    drawBars("top-users", empty ? [] : blob.top_users, (u) => u.username, "Top users", "User");
    setTime("generated-at", blob.generated_at);
    setTime("newest-message", blob.newest_message_at);
    const toggle = byId("zone-toggle");
    toggle.hidden = false;
    toggle.textContent = useUtc ? `Show ${localZone} time` : "Show UTC";
    toggle.setAttribute("aria-pressed", String(useUtc));
    freshness();
  }

  // --- loading ---

  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(load, ms);
  }

  function configurationHint(what) {
    return [
      `${what} Check `,
      { code: "STATS_CORS_ALLOWED_ORIGINS" },
      ` (it must list ${location.origin}) and `,
      { code: "S3_PUBLIC_ENDPOINT_URL" },
      " (an S3 address this browser can reach). Trying again in a minute.",
    ];
  }

  async function load() {
    let response;
    try {
      // /stat/get/ redirects to a presigned S3 URL; the bucket's CORS rules let this page read it.
      response = await fetch(config.source, { cache: "no-store", credentials: "same-origin" });
    } catch (error) {
      // A CORS refusal and an unreachable S3 endpoint look the same to a page: a TypeError.
      showProblem(configurationHint(`Could not read the statistics blob (${error.message}).`));
      setStatus(blob ? "Showing the last statistics read." : "No statistics to show.");
      later(config.refreshMs);
      return;
    }
    try {
      if (response.status === 503) {
        const wait = Number(response.headers.get("Retry-After")) || 10;
        clearProblem();
        setStatus(`Statistics are being prepared; trying again in ${wait} s.`);
        later(wait * 1000);
        return;
      }
      if (response.status === 401 || response.status === 403) {
        showProblem(["Only signed-in staff may see these statistics. ", { text: "Log in", href: config.loginUrl }, "."]);
        setStatus("Not signed in.");
        return; // Polling again cannot help until the viewer logs in.
      }
      if (!response.ok) {
        const fromStorage = new URL(response.url, location.href).origin !== location.origin;
        if (fromStorage) {
          showProblem(configurationHint(`Storage answered HTTP ${response.status} for the statistics blob.`));
        } else {
          showProblem([`The server answered HTTP ${response.status}; trying again in a minute.`]);
        }
        later(config.refreshMs);
        return;
      }
      const data = await response.json();
      if (data.schema_version !== SCHEMA_VERSION) {
        throw new Error(`unknown blob schema ${data.schema_version}`);
      }
      blob = data;
      clearProblem();
      drawAll();
    } catch (error) {
      showProblem([`Could not draw the statistics (${error.message}); trying again in a minute.`]);
    }
    later(config.refreshMs);
  }

  byId("zone-toggle").addEventListener("click", () => {
    useUtc = !useUtc;
    drawAll();
  });
  new ResizeObserver(() => {
    const width = byId("timeline").clientWidth;
    if (blob && drawnWidth && width !== drawnWidth) drawTimeline(blob.timeline);
  }).observe(byId("timeline"));
  setInterval(freshness, 1000);
  load();
})();
