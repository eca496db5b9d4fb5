// Polls the job's JSON until it finishes, updating the page in place (no reload). Served as
// its own file (no inline script: ready for a Content-Security-Policy); configuration comes
// from data- attributes of <main>. Data goes into the page as text only.
// (Rendered by Django's template engine: no double braces or brace-percent in here.)
(function () {
  "use strict";
  const root = document.getElementById("job");
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const POLL_MS = 1000;
  const seen = [];
  const numberFormat = new Intl.NumberFormat();
  let job = null;
  let stopped = false;
  // The server's clock minus the browser's, from the Date header of each answer: elapsed
  // time and rate are measured against the server's timestamps, not a skewed local clock.
  let clockOffsetMs = 0;

  function byId(id) { return document.getElementById(id); }

  function text(id, value) { byId(id).textContent = value; }

  function number(n) { return n === null || n === undefined ? "?" : numberFormat.format(n); }

  function amount(n, unit) {
    if (unit !== "bytes") { return number(n) + (unit ? " " + unit : ""); }
    if (n === null || n === undefined) { return "?"; }
    const units = ["bytes", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) { return s + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function serverNow() { return Date.now() + clockOffsetMs; }

  function setTime(id, iso, otherwise) {
    const node = byId(id);
    if (!iso) {
      node.textContent = otherwise;
      node.removeAttribute("datetime");
      node.removeAttribute("title");
      return;
    }
    const date = new Date(iso);
    const options = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    node.dateTime = iso;
    node.textContent = new Intl.DateTimeFormat(undefined, options).format(date) + " (" + zone + ")";
    node.title = new Intl.DateTimeFormat(undefined, Object.assign({ timeZone: "UTC" }, options)).format(date) + " UTC";
  }

  function showTimes() {
    setTime("created-at", job.created_at, "–");
    setTime("started-at", job.started_at, "not yet");
    setTime("finished-at", job.finished_at, FINISHED.indexOf(job.status) >= 0 ? "never started" : "not yet");
    const running = job.status === "running";
    document.querySelectorAll(".running-only").forEach((node) => { node.hidden = !running; });
    if (!job.started_at) {
      text("elapsed", job.status === "queued" ? "waiting for a worker" : "–");
      return;
    }
    const start = Date.parse(job.started_at);
    const end = job.finished_at ? Date.parse(job.finished_at) : serverNow();
    const seconds = Math.max(0, (end - start) / 1000);
    text("elapsed", duration(seconds));
    if (!running) { return; }
    const p = job.progress;
    // The average since the start: steadier than the last interval's, and right after a resume.
    const rate = seconds >= 1 && p.done ? p.done / seconds : 0;
    text("rate", rate ? amount(Math.round(rate), p.unit || "items") + "/s" : "measuring…");
    text("eta", rate && p.total && p.total > p.done ? "about " + duration((p.total - p.done) / rate) : rate ? "almost done" : "–");
  }

  function rejected(result) {
    return result && typeof result.rejected === "number" ? result.rejected : 0;
  }

  function showResult() {
    const rows = byId("result-rows");
    rows.replaceChildren();
    let result = job.result || {};
    if (job.erasures_performed !== undefined) { result = Object.assign({}, result, { erasures_performed: job.erasures_performed }); }
    // jsonb does not keep key order: show the counts first, in reading order.
    const ORDER = ["records", "valid", "stored", "rejected", "skipped_erased", "messages_erased", "staged_erased", "erasures_performed"];
    const keys = Object.keys(result).sort((a, b) => {
      const i = ORDER.indexOf(a), j = ORDER.indexOf(b);
      return (i < 0 ? 99 : i) - (j < 0 ? 99 : j) || (a < b ? -1 : 1);
    });
    keys.forEach((key) => {
      const tr = document.createElement("tr"), name = document.createElement("th"), value = document.createElement("td");
      name.scope = "row";
      name.textContent = key.replace(/_/g, " ");
      value.textContent = typeof result[key] === "number" ? number(result[key]) : String(result[key]);
      tr.append(name, value);
      rows.append(tr);
    });
    byId("result").hidden = keys.length === 0;
    // A report exists for every import; it is worth offering only when it lists something.
    const offer = Boolean(job.urls.report) && rejected(job.result) > 0;
    if (offer) { byId("report-link").href = root.dataset.report; }
    byId("report").hidden = !offer;
  }

  function announce(previous) {
    if (FINISHED.indexOf(job.status) < 0 || previous === job.status) { return; }
    const parts = [root.dataset.kind + " " + job.status + "."];
    const result = job.result || {};
    if (typeof result.stored === "number") { parts.push(number(result.stored) + " stored."); }
    if (rejected(result)) { parts.push(number(rejected(result)) + " rejected; the error report is linked below."); }
    if (typeof result.messages_erased === "number") { parts.push(number(result.messages_erased) + " messages erased."); }
    if (job.error) { parts.push(job.error); }
    text("announce", parts.join(" "));
  }

  function showCancel() {
    const button = byId("cancel");
    if (!button) { return; }
    const open = FINISHED.indexOf(job.status) < 0;
    button.hidden = !open;
    button.disabled = job.cancel_requested;
    button.textContent = job.cancel_requested ? "Cancelling…" : "Cancel job";
  }

  function show(next) {
    const previous = job ? job.status : null;
    job = next;
    if (seen[seen.length - 1] !== job.status) { seen.push(job.status); }
    root.dataset.seen = seen.join(" ");
    root.dataset.status = job.status;
    text("status", job.status);
    text("message", job.cancel_requested && job.status === "running" ? "Cancelling…" : job.progress.message);
    const p = job.progress;
    let fraction = p.total ? Math.min(1, p.done / p.total) : 0;
    if (job.status === "succeeded") { fraction = 1; }
    const percent = Math.round(fraction * 100);
    const counts = p.total || p.done ? amount(p.done, p.unit) + " of " + amount(p.total, p.unit) + " (" + percent + "%)" : "";
    byId("bar").firstElementChild.style.width = percent + "%";
    byId("bar").setAttribute("aria-valuenow", String(percent));
    byId("bar").setAttribute("aria-valuetext", counts ? counts + ", " + job.status : percent + "%, " + job.status);
    text("counts", counts);
    const error = byId("error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    showTimes();
    showCancel();
    if (FINISHED.indexOf(job.status) >= 0) { showResult(); }
    announce(previous);
  }

  function problem(message) {
    const node = byId("problem");
    node.textContent = message;
    node.hidden = !message;
  }

  function refused(response) {
    // The link expired, or the session or token no longer grants access: asking again every
    // second cannot change that, so the page stops and says what to do.
    stopped = true;
    root.dataset.polling = "stopped";
    return response.json().catch(() => ({})).then((body) => {
      const why = response.status === 404 ? "This job no longer exists." :
        body.error === "invalid_link" ? "This link has expired or is not valid for this job." :
          "Access to this job was refused (" + (body.message || "HTTP " + response.status) + ").";
      problem(why + " The page has stopped updating; ask for a new link, or log in as staff and reload.");
      const button = byId("cancel");
      if (button) { button.hidden = true; }
    });
  }

  function remember(response) {
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) { clockOffsetMs = date - Date.now(); }
  }

  function poll() {
    if (stopped) { return; }
    fetch(root.dataset.api, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then((response) => {
        remember(response);
        if (response.status === 401 || response.status === 403 || response.status === 404) { return refused(response); }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json().then((next) => {
          problem("");
          show(next);
          if (FINISHED.indexOf(next.status) < 0) { setTimeout(poll, POLL_MS); } else { root.dataset.polling = "done"; }
        });
      })
      .catch((err) => {
        problem("Could not read the job (" + err.message + "); retrying.");
        setTimeout(poll, POLL_MS * 3);
      });
  }

  function cancel() {
    const button = byId("cancel");
    button.disabled = true;
    button.textContent = "Cancelling…";
    fetch(root.dataset.cancel, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": root.dataset.csrfToken },
    }).then((response) => {
      if (response.status === 202) { return response.json().then(show); }
      if (response.status === 409) { return null; } // It finished meanwhile: the next poll shows how.
      return response.json().catch(() => ({})).then((body) => {
        problem("Could not cancel the job: " + (body.message || "HTTP " + response.status));
        button.disabled = false;
        button.textContent = "Cancel job";
      });
    }).catch((err) => {
      problem("Could not cancel the job (" + err.message + ").");
      button.disabled = false;
      button.textContent = "Cancel job";
    });
  }

  if (byId("cancel")) { byId("cancel").addEventListener("click", cancel); }
  setInterval(() => { if (job && job.status === "running") { showTimes(); } }, 1000);
  poll();
})();
