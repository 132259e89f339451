/* The log of the task shown on a run's page (CONNECTORS.md, "Task logs"): the lines of
   its latest attempt (or the one chosen), asked of GET .../tasks/<task_id>/logs, and
   asked again every second while that attempt runs ("following"). Lines are text
   nodes only: a log is what a task wrote, never markup. */
(function () {
  "use strict";

  var FOLLOW_MS = 1000;

  function TaskLogs(root) {
    this.api = root.getAttribute("data-api");
    this.root = root;
    this.shown = {};  // per panel's task: the key of what is shown, and whether it is live
    this.busy = false;
  }

  TaskLogs.prototype.visible = function () {
    var panels = this.root.querySelectorAll(".apg-task-detail[data-task]");
    for (var i = 0; i < panels.length; i++) {
      if (!panels[i].hidden && panels[i].getAttribute("data-task")) return panels[i];
    }
    return null;
  };

  TaskLogs.prototype.url = function (panel) {
    var task = panel.getAttribute("data-task");
    var attempt = panel.querySelector(".apg-log-attempt").value;
    var itemPick = panel.querySelector(".apg-log-item-pick");
    var items = panel.querySelector(".apg-items");
    // A for_each task's attempts are its elements': which element's, then.
    if (itemPick && items) itemPick.hidden = items.hidden;
    var args = [];
    if (attempt) args.push("attempt=" + encodeURIComponent(attempt));
    if (itemPick && !itemPick.hidden) {
      args.push("item=" + encodeURIComponent(panel.querySelector(".apg-log-item").value || "0"));
    }
    return this.api + "/tasks/" + encodeURIComponent(task) + "/logs" +
      (args.length ? "?" + args.join("&") : "");
  };

  TaskLogs.prototype.tick = function (force) {
    var panel = this.visible();
    if (!panel || this.busy) return;
    var url = this.url(panel);
    var known = this.shown[panel.getAttribute("data-task")];
    var status = panel.querySelector(".panel-heading .apg-status");
    var taskActive = status && /apg-st-(queued|running|pending|retrying)/.test(status.className);
    // Asked again only while something may still change: a new selection, a live
    // attempt, or a task whose next attempt may begin.
    if (!force && known && known.url === url && !known.live && !taskActive) return;
    var self = this;
    this.busy = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body && body.result) self.render(panel, url, body.result); })
      .catch(function () { /* asked again on the next tick */ })
      .then(function () { self.busy = false; });
  };

  TaskLogs.prototype.render = function (panel, url, log) {
    var box = panel.querySelector(".apg-task-log");
    var select = panel.querySelector(".apg-log-attempt");
    var chosen = select.value;
    var numbers = (log.attempts || []).map(String);
    var have = Array.prototype.slice.call(select.options, 1).map(function (o) { return o.value; });
    if (have.join(",") !== numbers.join(",")) {
      while (select.options.length > 1) select.remove(1);
      numbers.forEach(function (n) {
        var option = document.createElement("option");
        option.value = n;
        option.textContent = n;
        select.appendChild(option);
      });
      select.value = numbers.indexOf(chosen) >= 0 ? chosen : "";
    }
    var atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    window.APGLogLines.render(box, log.lines);
    if (atBottom) box.scrollTop = box.scrollHeight;  // follow, unless the reader scrolled up
    var cut = panel.querySelector(".apg-log-truncated");
    cut.hidden = !log.truncated;
    cut.textContent = log.truncated ? log.truncated.toLocaleString("en-US") +
      " more lines were written and not kept (TASK_LOG_MAX_LINES)." : "";
    panel.querySelector(".apg-log-live").hidden = !log.live;
    this.shown[panel.getAttribute("data-task")] = { url: url, live: !!log.live };
  };

  function start() {
    var root = document.querySelector("[data-run-id][data-api]");
    if (!root || !window.fetch || !window.APGLogLines) return;
    var logs = new TaskLogs(root);
    root.addEventListener("change", function (event) {
      var target = event.target;
      if (target.classList.contains("apg-log-attempt") || target.classList.contains("apg-log-item")) {
        logs.tick(true);
      }
    });
    // A task chosen in the list: its log at once, not on the next tick.
    document.addEventListener("click", function (event) {
      if (event.target.closest && event.target.closest(".apg-task-item, .apg-node")) {
        setTimeout(function () { logs.tick(false); }, 50);
      }
    });
    logs.tick(true);
    setInterval(function () { logs.tick(false); }, FOLLOW_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
