// Draws the stats blob. Every piece of data goes into the page as text (textContent or an
// SVG text node), never as markup, so a username like "<img onerror=...>" shows as itself.
// (Included into the page by the template: no double braces or brace-percent in here.)
(function () {
  "use strict";

  const main = document.querySelector("main");
  const source = main.dataset.source;
  const refreshMs = Number(main.dataset.refreshSeconds) * 1000;
  const SCHEMA_VERSION = 1;
  const SVG = "http://www.w3.org/2000/svg";
  const number = new Intl.NumberFormat("en-US");
  let timer = null;

  function byId(id) {
    return document.getElementById(id);
  }

  function svgElement(name, attributes) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) {
      element.setAttribute(key, String(value));
    }
    return element;
  }

  function svgText(x, y, text, anchor) {
    const element = svgElement("text", { x: x, y: y, "text-anchor": anchor || "start" });
    element.textContent = text;
    return element;
  }

  function empty(container, text) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    container.replaceChildren(p);
  }

  function setStatus(text, isError) {
    const status = byId("status");
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  function drawTotals(totals) {
    for (const name of ["messages", "users", "cities", "states"]) {
      byId("total-" + name).textContent = number.format(totals[name]);
    }
  }

  function drawStates(states) {
    const container = byId("states");
    if (!states.length) {
      empty(container, "No messages yet.");
      return;
    }
    // About the width the page gives the chart, so text is drawn near its CSS size.
    const rowHeight = 22, labelWidth = 90, countWidth = 60, width = 360;
    const barSpace = width - labelWidth - countWidth;
    const max = Math.max(...states.map((s) => s.messages));
    const svg = svgElement("svg", { viewBox: `0 0 ${width} ${states.length * rowHeight}`, role: "img" });
    states.forEach((item, i) => {
      const y = i * rowHeight;
      const label = svgText(labelWidth - 6, y + 15, item.state, "end");
      label.setAttribute("class", "state-name");
      svg.append(label);
      const bar = svgElement("rect", {
        class: "bar", x: labelWidth, y: y + 4, height: rowHeight - 8,
        width: Math.max(1, (item.messages / max) * barSpace),
      });
      const tip = svgElement("title");
      tip.textContent = `${item.state}: ${number.format(item.messages)}`;
      bar.append(tip);
      svg.append(bar);
      const count = svgText(labelWidth + (item.messages / max) * barSpace + 6, y + 15, number.format(item.messages));
      count.setAttribute("class", "state-count");
      svg.append(count);
    });
    container.replaceChildren(svg);
  }

  function drawRanking(id, items, nameOf) {
    const list = byId(id);
    if (!items.length) {
      list.replaceChildren();
      return;
    }
    const max = items[0].messages;
    list.replaceChildren(...items.map((item) => {
      const li = document.createElement("li");
      const row = document.createElement("div");
      row.className = "row";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = nameOf(item);
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = number.format(item.messages);
      row.append(name, count);
      const meter = document.createElement("div");
      meter.className = "meter";
      meter.style.width = `${Math.max(1, (100 * item.messages) / max)}%`;
      li.append(row, meter);
      return li;
    }));
  }

  function clock(iso) {
    return iso.slice(11, 16);
  }

  function drawTimeline(timeline) {
    const container = byId("timeline");
    byId("timeline-minutes").textContent = String(timeline.length);
    const width = 1000, height = 220, left = 50, right = 24, top = 10, bottom = 24;
    const plotWidth = width - left - right, plotHeight = height - top - bottom;
    const max = Math.max(1, ...timeline.map((p) => p.messages));
    const step = timeline.length > 1 ? plotWidth / (timeline.length - 1) : 0;
    const x = (i) => left + i * step;
    const y = (v) => top + plotHeight - (v / max) * plotHeight;
    const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
    svg.append(svgElement("line", { class: "axis", x1: left, y1: top + plotHeight, x2: width - right, y2: top + plotHeight }));
    svg.append(svgElement("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotHeight }));
    svg.append(svgText(left - 6, top + 10, number.format(max), "end"));
    svg.append(svgText(left - 6, top + plotHeight, "0", "end"));
    const points = timeline.map((p, i) => `${x(i).toFixed(1)},${y(p.messages).toFixed(1)}`);
    if (points.length) {
      const baseline = `${x(timeline.length - 1).toFixed(1)},${y(0)} ${x(0).toFixed(1)},${y(0)}`;
      svg.append(svgElement("polygon", { class: "area", points: `${points.join(" ")} ${baseline}` }));
      svg.append(svgElement("polyline", { class: "line", points: points.join(" ") }));
      const labelEvery = Math.max(1, Math.ceil(timeline.length / 10));
      timeline.forEach((p, i) => {
        if (i % labelEvery === 0 || i === timeline.length - 1) {
          const anchor = i === timeline.length - 1 ? "end" : "middle";
          svg.append(svgText(x(i), height - 6, clock(p.minute), anchor));
        }
      });
    }
    container.replaceChildren(svg);
  }

  function draw(blob) {
    if (blob.schema_version !== SCHEMA_VERSION) {
      throw new Error(`unknown blob schema ${blob.schema_version}`);
    }
    drawTotals(blob.totals);
    drawTimeline(blob.timeline);
    drawStates(blob.states);
    drawRanking("top-cities", blob.top_cities, (c) => `${c.city}, ${c.state}`);
    drawRanking("top-users", blob.top_users, (u) => u.username);
    byId("generated-at").textContent = blob.generated_at;
    byId("newest-message").textContent = blob.newest_message_at || "none";
  }

  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(load, ms);
  }

  async function load() {
    try {
      // /stat/get/ redirects to a presigned S3 URL; the bucket's CORS rules let this page read it.
      const response = await fetch(source, { cache: "no-store" });
      if (response.status === 503) {
        const wait = Number(response.headers.get("Retry-After")) || 10;
        setStatus(`Statistics are being prepared; trying again in ${wait} s.`, false);
        later(wait * 1000);
        return;
      }
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
      draw(await response.json());
      setStatus(`Updated ${new Date().toISOString().slice(11, 19)} UTC; refreshes every minute.`, false);
    } catch (error) {
      setStatus(`Could not load statistics (${error.message}); trying again in a minute.`, true);
    }
    later(refreshMs);
  }

  load();
})();
