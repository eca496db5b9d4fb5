// Polls the job's JSON until it finishes, updating the page in place (no reload).
(function () {
  "use strict";
  var root = document.getElementById("job");
  var FINISHED = ["succeeded", "failed", "cancelled"];
  var POLL_MS = 1000;
  var seen = [];

  function number(n) { return n === null || n === undefined ? "?" : Number(n).toLocaleString("en-US"); }

  function amount(n, unit) {
    if (unit !== "bytes") { return number(n) + (unit ? " " + unit : ""); }
    if (n === null || n === undefined) { return "?"; }
    var units = ["bytes", "KB", "MB", "GB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function text(id, value) { document.getElementById(id).textContent = value; }

  function showResult(job) {
    var rows = document.getElementById("result-rows");
    rows.replaceChildren();
    var result = job.result || {};
    if (job.erasures_performed !== undefined) { result = Object.assign({}, result, { erasures_performed: job.erasures_performed }); }
    // jsonb does not keep key order: show the counts first, in reading order.
    var ORDER = ["records", "valid", "stored", "rejected", "messages_erased", "staged_erased", "erasures_performed"];
    var keys = Object.keys(result).sort(function (a, b) {
      var i = ORDER.indexOf(a), j = ORDER.indexOf(b);
      return (i < 0 ? 99 : i) - (j < 0 ? 99 : j) || (a < b ? -1 : 1);
    });
    keys.forEach(function (key) {
      var tr = document.createElement("tr"), name = document.createElement("td"), value = document.createElement("td");
      name.textContent = key.replace(/_/g, " ");
      value.textContent = typeof result[key] === "number" ? number(result[key]) : String(result[key]);
      tr.append(name, value);
      rows.append(tr);
    });
    document.getElementById("result").hidden = Object.keys(result).length === 0;
    if (job.urls.report) {
      document.getElementById("report-link").href = root.dataset.report;
      document.getElementById("report").hidden = false;
    }
  }

  function show(job) {
    if (seen[seen.length - 1] !== job.status) { seen.push(job.status); }
    root.dataset.seen = seen.join(" ");
    root.dataset.status = job.status;
    text("status", job.status);
    text("message", job.cancel_requested && job.status === "running" ? "Cancelling…" : job.progress.message);
    var p = job.progress, fraction = p.total ? Math.min(1, p.done / p.total) : 0;
    if (job.status === "succeeded") { fraction = 1; }
    var percent = Math.round(fraction * 100);
    document.querySelector("#bar > div").style.width = percent + "%";
    document.getElementById("bar").setAttribute("aria-valuenow", String(percent));
    text("counts", p.total || p.done ? amount(p.done, p.unit) + " of " + amount(p.total, p.unit) + " (" + percent + "%)" : "");
    var error = document.getElementById("error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    if (FINISHED.indexOf(job.status) >= 0) { showResult(job); }
  }

  function poll() {
    fetch(root.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (job) {
        show(job);
        if (FINISHED.indexOf(job.status) < 0) { setTimeout(poll, POLL_MS); }
      })
      .catch(function (err) {
        text("message", "Could not read the job (" + err.message + "); retrying.");
        setTimeout(poll, POLL_MS * 3);
      });
  }

  poll();
})();
