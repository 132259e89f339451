/* Triggers pages: the schedule form's live preview, the backfill panel (count first,
   then start and follow), copy buttons and confirmations. No inline script (CSP). */
(function () {
  "use strict";

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
    });
  }

  function problems(data) {
    var errors = (data && data.errors) || [];
    if (!errors.length) return (data && data.message) || "refused";
    return errors.map(function (e) { return (e.path ? e.path + ": " : "") + e.message; }).join("; ");
  }

  function utc(iso) {
    var d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function local(iso) {  /* 2027-03-28T03:00:00+02:00 -> 2027-03-28 03:00 +02:00 */
    return iso.slice(0, 16).replace("T", " ") + " " + iso.slice(19);
  }

  function preview(form) {
    var table = document.querySelector("#preview tbody");
    var error = document.getElementById("preview-error");
    var timer = null;
    function value(name) { var el = form.elements[name]; return el ? el.value.trim() : ""; }
    function refresh() {
      if (!value("cron")) return;
      post(form.getAttribute("data-preview-url"), form.getAttribute("data-csrf"), {
        cron: value("cron"), timezone: value("timezone") || "UTC", count: 5,
        dst: { missing: value("dst_missing") || "shift", repeated: value("dst_repeated") || "first" }
      }).then(function (res) {
        table.textContent = "";
        if (!res.ok) {
          error.textContent = problems(res.data);
          error.hidden = false;
          return;
        }
        error.hidden = true;
        res.data.fire_times.forEach(function (t) {
          var row = table.insertRow();
          row.insertCell().textContent = local(t);
          row.insertCell().textContent = utc(t);
        });
        if (!res.data.fire_times.length) {
          error.textContent = "It never fires.";
          error.hidden = false;
        }
      });
    }
    ["cron", "timezone", "dst_missing", "dst_repeated"].forEach(function (name) {
      var el = form.elements[name];
      if (!el) return;
      el.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 250); });
      el.addEventListener("change", refresh);
    });
    refresh();
  }

  function backfill(panel) {
    var message = document.getElementById("backfill-message");
    var start = document.getElementById("backfill-start-button");
    var csrf = panel.getAttribute("data-csrf");
    function range() {
      var a = document.getElementById("backfill-start").value;
      var b = document.getElementById("backfill-end").value;
      if (!a || !b) return null;
      return { start: a + ":00Z", end: b + ":00Z" };
    }
    function follow(id) {
      var url = panel.getAttribute("data-progress").replace("_ID_", id);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          var p = data.result;
          message.textContent = "Backfill " + p.status + ": " + p.succeeded + " succeeded, " + p.failed +
            " failed, " + p.running + " running, " + p.created + " of " + p.total + " started" + (p.created === 0 && p.status === "running" ? " (the schedulers start them within seconds)." : ".");
          if (p.status === "running") setTimeout(function () { follow(id); }, 2000);
        });
    }
    document.getElementById("backfill-count").addEventListener("click", function () {
      var body = range();
      start.hidden = true;
      if (!body) { message.textContent = "Choose both times first."; return; }
      body.dry_run = true;
      body.max_runs = 1000;
      post(panel.getAttribute("data-url"), csrf, body).then(function (res) {
        if (!res.ok) { message.textContent = problems(res.data); return; }
        var n = res.data.ticks;
        message.textContent = n + " run" + (n === 1 ? "" : "s") + " will be created, one per tick.";
        start.hidden = n === 0;
        start.textContent = "Start " + n + " run" + (n === 1 ? "" : "s");
        start.setAttribute("data-ticks", n);
      });
    });
    start.addEventListener("click", function () {
      var body = range();
      var n = Number(start.getAttribute("data-ticks"));
      if (!body || !window.confirm("Start " + n + " runs of this workflow?")) return;
      body.max_runs = Math.max(n, 1);
      start.hidden = true;
      post(panel.getAttribute("data-url"), csrf, body).then(function (res) {
        if (!res.ok) { message.textContent = problems(res.data); return; }
        follow(res.data.id);
      });
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      var text = source.value || source.textContent;
      if (navigator.clipboard) navigator.clipboard.writeText(text);
      source.select && source.select();
      button.textContent = "Copied";
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
  var form = document.getElementById("schedule-form");
  if (form) preview(form);
  var panel = document.getElementById("backfill-panel");
  if (panel) backfill(panel);
})();
