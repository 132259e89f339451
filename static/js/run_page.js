/* Run pages: a run's page follows the run live (Socket.IO namespace /runs, room of the
 * run; GET /api/v1/runs/<id> every 2 s when the socket cannot connect), recolours the task
 * graph (drawn by graph.js) and counts the elements of its for_each tasks, redraws the
 * timeline of attempts and fills the task panels without a reload.
 * Also: clickable rows of the runs list, confirm dialogs on destructive forms.
 * A static file, not an inline script: the Content-Security-Policy allows 'self' only. */
(function () {
  "use strict";

  var FINISHED = ["succeeded", "failed", "cancelled"];
  var POLL_MS = 2000;
  var DASH = "\u2014";

  /* -- formatting (as capability/runs/graph.py does it on the server) ------------- */
  function label(status) { return (status || "").replace(/_/g, " "); }
  function ms(iso) { return iso ? new Date(iso).getTime() : null; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function when(iso) {
    if (!iso) return DASH;
    var d = new Date(iso);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" +
      pad(d.getUTCSeconds()) + " UTC";
  }

  function seconds(s) {
    if (s < 1) return Math.max(0, Math.round(s * 1000)) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    var total = Math.round(s), minutes = Math.floor(total / 60);
    if (minutes < 60) return minutes + " min " + (total % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function took(start, end) {
    if (!start) return DASH;
    if (end) return seconds((ms(end) - ms(start)) / 1000);
    return seconds((Date.now() - ms(start)) / 1000) + "\u2026";
  }

  function sorted(value) {
    if (Array.isArray(value)) return value.map(sorted);
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).sort().forEach(function (k) { out[k] = sorted(value[k]); });
      return out;
    }
    return value;
  }

  function setStatus(el, status) {
    Array.prototype.slice.call(el.classList).forEach(function (c) {
      if (c.indexOf("apg-st-") === 0) el.classList.remove(c);
    });
    el.classList.add("apg-st-" + status);
  }

  function setLabel(el, status) {
    if (!el) return;
    setStatus(el, status);
    el.textContent = label(status);
  }

  function statusLabel(status) {
    var span = document.createElement("span");
    span.className = "label apg-status";
    setLabel(span, status);
    return span;
  }

  function cell(row, content, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    row.appendChild(td);
    return td;
  }

  function show(el, visible) { if (el) el.hidden = !visible; }

  /* A task's elements: its total (a run's JSON and a live update carry a page of them). */
  function total(task) {
    return task.items_total !== undefined ? task.items_total : (task.items || []).length;
  }

  /* Each cell names its column (data-label): a phone shows a table's rows as stacked
   * cards, where the header row is not there to say what a value is (apg.css). */
  function labelCells(table) {
    var heads = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
      return th.textContent.trim();
    });
    table.querySelectorAll("tbody tr").forEach(function (row) {
      Array.prototype.forEach.call(row.children, function (td, i) {
        if (td.colSpan === 1 && heads[i]) td.setAttribute("data-label", heads[i]);
      });
    });
  }

  /* -- one run's page -------------------------------------------------------------- */
  function RunPage(root) {
    this.root = root;
    this.id = root.getAttribute("data-run-id");
    this.api = root.getAttribute("data-api");
    this.state = JSON.parse(root.getAttribute("data-state"));
    this.poller = null;
    this.ticker = null;
    this.pending = null;
    this.itemErrors = {};
    this.compErrors = {};
    // Tasks whose elements or attempts the user asked more of ("load more"): how many
    // of each; their panels are filled from GET .../tasks/<task_id>, not the run's JSON.
    this.more = {};
    this.pageSize = parseInt(root.getAttribute("data-page"), 10) || 100;
    this.maxPage = parseInt(root.getAttribute("data-max-page"), 10) || 1000;
    this.indicator = document.getElementById("live-indicator");
    var svg = document.getElementById("run-graph");
    this.graph = svg && window.apgGraph ? window.apgGraph.of(svg) : null;
  }

  RunPage.prototype.finished = function () {
    return FINISHED.indexOf(this.state.status) >= 0;
  };

  RunPage.prototype.mode = function (name, title) {
    if (!this.indicator) return;
    this.indicator.textContent = name;
    this.indicator.title = title;
    this.indicator.className = "apg-live apg-live-" + name;
  };

  RunPage.prototype.task = function (id) {
    return this.root.querySelector('.apg-task-detail[data-task="' + id + '"]');
  };

  /* Statuses and times: from a live event (no outputs) or the API (everything). */
  RunPage.prototype.apply = function (run, full) {
    if (!run || run.id !== this.id) return;
    var self = this;
    this.state = run;
    if (full) this.full = run;
    setLabel(document.getElementById("run-status"), run.status);
    document.getElementById("run-started").textContent = when(run.started_at);
    document.getElementById("run-finished").textContent = when(run.finished_at);
    // The controls the run allows now, by the rule the service enforces (the page has
    // forms only for users who may control it at all).
    var allowed = run.controls || [];
    this.root.querySelectorAll("form.apg-control[data-action]").forEach(function (form) {
      show(form, allowed.indexOf(form.getAttribute("data-action")) >= 0);
    });
    var blocked = document.getElementById("retry-blocked");
    if (blocked) {
      show(blocked, !!run.retry_blocked);
      blocked.querySelector(".apg-retry-reason").textContent = run.retry_blocked || "";
    }
    var live = ["running", "paused"].indexOf(run.status) >= 0;
    run.tasks.forEach(function (task) {
      if (self.graph) self.graph.update(task.task_id, task.status, total(task));
      var item = self.root.querySelector('.apg-task-item[data-task="' + task.task_id + '"]');
      if (item) setLabel(item.querySelector(".apg-status"), task.status);
      var panel = self.task(task.task_id);
      if (!panel) return;
      setLabel(panel.querySelector(".panel-heading .apg-status"), task.status);
      panel.querySelector(".apg-task-started").textContent = when(task.started_at);
      panel.querySelector(".apg-task-finished").textContent = when(task.finished_at);
      var reasonRow = panel.querySelector(".apg-task-reason-row");
      if (reasonRow) {
        show(reasonRow, !!task.reason);
        reasonRow.querySelector(".apg-task-reason").textContent = task.reason || "";
      }
      show(panel.querySelector("[data-approval]"), live && task.status === "waiting_approval");
      if (window.apgAgentStep) window.apgAgentStep.update(panel, task, live);
      if (self.more[task.task_id]) return;  // filled from its own page (fetchTask)
      self.items(panel, task, full);
      if (full) self.fill(panel, task);
    });
    this.compensations(run.compensations || [], full);
    this.updateDuration();
    this.drawTimeline();
    if (this.finished()) {
      this.stopPolling();
      if (this.ticker) { clearInterval(this.ticker); this.ticker = null; }
    } else if (!this.ticker) {
      this.ticker = setInterval(function () { self.updateDuration(); self.drawTimeline(); }, 1000);
    }
  };

  /* The items of a for_each task, as status chips (their errors come with the API). */
  RunPage.prototype.items = function (panel, task, full) {
    var box = panel.querySelector(".apg-items");
    var items = task.items || [];
    if (!box) return;
    var errors = this.itemErrors[task.task_id] = this.itemErrors[task.task_id] || {};
    if (full) items.forEach(function (item) { errors[item.index] = item.error || ""; });
    var all = total(task);
    show(box, all > 0);
    box.querySelector(".apg-items-count").textContent = String(all);
    show(box.querySelector(".apg-items-shown"), items.length < all);
    box.querySelector(".apg-items-n").textContent = String(items.length);
    show(box.querySelector(".apg-items-more"), items.length < all && items.length < this.maxPage);
    var chips = box.querySelector(".apg-item-chips");
    chips.textContent = "";
    items.forEach(function (item) {
      var chip = statusLabel(item.status);
      chip.textContent = String(item.index);
      chip.title = "item " + item.index + ": " + label(item.status) +
        (errors[item.index] ? ": " + errors[item.index] : "");
      chips.appendChild(chip);
      chips.appendChild(document.createTextNode(" "));
    });
  };

  /* The undo steps that ran because the run failed. */
  RunPage.prototype.compensations = function (steps, full) {
    var box = document.getElementById("compensations");
    if (!box) return;
    var errors = this.compErrors;
    if (full) steps.forEach(function (step) { errors[step.task_id] = step.error || ""; });
    show(box, steps.length > 0);
    var body = box.querySelector("tbody");
    body.textContent = "";
    steps.forEach(function (step) {
      var row = document.createElement("tr");
      row.setAttribute("data-task", step.task_id);
      cell(row, step.task_id, "apg-task-name");
      cell(row, statusLabel(step.status));
      cell(row, String(step.attempts));
      cell(row, when(step.started_at), "text-nowrap");
      cell(row, when(step.finished_at), "text-nowrap");
      cell(row, errors[step.task_id] || "", "apg-attempt-error");
      body.appendChild(row);
    });
    labelCells(box.querySelector("table"));
  };

  /* Attempts, error and output of one task (API data only: live events carry none). */
  RunPage.prototype.fill = function (panel, task) {
    var body = panel.querySelector(".apg-attempts tbody");
    body.textContent = "";
    (task.attempt_history || []).forEach(function (a) {
      var row = document.createElement("tr");
      var number = cell(row, String(a.number), "text-nowrap");
      if (a.item !== null && a.item !== undefined) {
        var item = document.createElement("span");
        item.className = "text-muted";
        item.textContent = " item " + a.item;
        number.appendChild(item);
      }
      cell(row, statusLabel(a.status));
      cell(row, a.worker || DASH, "apg-worker");
      cell(row, when(a.started_at), "text-nowrap");
      cell(row, when(a.finished_at), "text-nowrap");
      cell(row, took(a.started_at, a.finished_at), "text-nowrap");
      cell(row, a.error || "", "apg-attempt-error");
      body.appendChild(row);
    });
    if (!body.children.length) {
      var empty = document.createElement("tr");
      empty.className = "apg-empty";
      cell(empty, task.reason ? "Never ran: " + task.reason : "No attempt yet.",
        "text-muted").colSpan = 7;
      body.appendChild(empty);
    }
    labelCells(panel.querySelector(".apg-attempts"));
    var shown = (task.attempt_history || []).length;
    var made = task.attempt_history_total === undefined ? shown : task.attempt_history_total;
    var more = panel.querySelector(".apg-attempts-more");
    if (more) {
      show(more, shown < made && shown < this.maxPage);
      more.querySelector(".apg-attempts-n").textContent = String(shown);
      more.querySelector(".apg-attempts-total").textContent = String(made);
    }
    var error = panel.querySelector(".apg-task-error");
    error.textContent = task.error || "";
    show(error, !!task.error);
    show(panel.querySelector(".apg-task-no-error"), !task.error);
    var output = panel.querySelector(".apg-task-output");
    var cut = task.output_cut, note = panel.querySelector(".apg-output-cut");
    show(note, !!cut);
    if (cut && note) {
      note.querySelector(".apg-output-size").textContent = cut.size.toLocaleString("en-US");
      note.querySelector(".apg-output-whole").setAttribute("href", cut.href);
    }
    var has = !!cut || (task.output !== null && task.output !== undefined);
    output.textContent = cut ? cut.preview + "\u2026" :
      has ? JSON.stringify(sorted(task.output), null, 2) : "";
    show(output, has);
    show(panel.querySelector(".apg-task-no-output"), !has);
  };

  RunPage.prototype.updateDuration = function () {
    var run = this.state;
    var text = run.started_at ? took(run.started_at, run.finished_at) : DASH;
    document.getElementById("run-duration").textContent = text;
  };

  /* The timeline: a row per task, a bar per attempt from its start to its end (or now). */
  RunPage.prototype.drawTimeline = function () {
    var box = document.getElementById("timeline");
    var run = this.state, now = Date.now(), bars = [];
    var start = ms(run.started_at) || ms(run.created_at), end = ms(run.finished_at) || 0;
    run.tasks.forEach(function (task) {
      (task.attempt_history || []).forEach(function (a) {
        if (!a.started_at) return;
        var s = ms(a.started_at), e = ms(a.finished_at) || now;
        bars.push({ task: task.task_id, a: a, s: s, e: e });
        start = Math.min(start, s);
        end = Math.max(end, e);
      });
    });
    box.textContent = "";
    if (!bars.length) {
      var note = document.createElement("p");
      note.className = "text-muted";
      note.textContent = "No attempt has started yet.";
      box.appendChild(note);
      return;
    }
    if (!this.finished()) end = Math.max(end, now);
    var span = Math.max(end - start, 1000);
    var axis = document.createElement("div");
    axis.className = "apg-tl-row apg-tl-axis";
    var axisLabel = document.createElement("div");
    axisLabel.className = "apg-tl-label";
    var ticks = document.createElement("div");
    ticks.className = "apg-tl-track";
    for (var i = 0; i <= 4; i++) {
      var tick = document.createElement("span");
      tick.className = "apg-tl-tick";
      tick.style.left = (i * 25) + "%";
      tick.textContent = i === 0 ? "0" : seconds(span * i / 4000);
      ticks.appendChild(tick);
    }
    axis.appendChild(axisLabel);
    axis.appendChild(ticks);
    box.appendChild(axis);
    run.tasks.forEach(function (task) {
      var row = document.createElement("div");
      row.className = "apg-tl-row";
      row.setAttribute("data-task", task.task_id);
      var name = document.createElement("div");
      name.className = "apg-tl-label";
      name.textContent = task.task_id;
      name.title = task.task_id + ": " + label(task.status);
      var track = document.createElement("div");
      track.className = "apg-tl-track";
      bars.filter(function (b) { return b.task === task.task_id; }).forEach(function (b) {
        var bar = document.createElement("div");
        bar.className = "apg-tl-bar";
        setStatus(bar, b.a.status);
        bar.setAttribute("data-attempt", b.a.number);
        bar.style.left = ((b.s - start) / span * 100) + "%";
        bar.style.width = Math.max((b.e - b.s) / span * 100, 0.6) + "%";
        var item = b.a.item !== null && b.a.item !== undefined ? " (item " + b.a.item + ")" : "";
        bar.title = task.task_id + item + " attempt " + b.a.number + ": " + label(b.a.status) + ", " +
          took(b.a.started_at, b.a.finished_at) + (b.a.worker ? " on " + b.a.worker : "");
        track.appendChild(bar);
      });
      row.appendChild(name);
      row.appendChild(track);
      box.appendChild(row);
    });
  };

  /* One task with more of its elements and attempts than the run's JSON carries. */
  RunPage.prototype.fetchTask = function (id) {
    var self = this, m = this.more[id];
    var url = this.api + "/tasks/" + encodeURIComponent(id) + "?items_limit=" + m.items +
      "&attempts_limit=" + m.attempts;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        var panel = self.task(id);
        if (!body || !body.result || !panel) return;
        self.items(panel, body.result, true);
        self.fill(panel, body.result);
      })
      .catch(function () { /* the next refresh tries again */ });
  };

  RunPage.prototype.loadMore = function (id, kind) {
    var m = this.more[id] || { items: this.pageSize, attempts: this.pageSize };
    m[kind] = Math.min(m[kind] + this.pageSize, this.maxPage);
    this.more[id] = m;
    return this.fetchTask(id);
  };

  /* Fetch everything (outputs, errors) soon after a change; coalesces bursts. */
  RunPage.prototype.refresh = function (delay) {
    var self = this;
    if (this.pending) return;
    this.pending = setTimeout(function () {
      fetch(self.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) { if (body && body.result) self.apply(body.result, true); })
        .then(function () {
          return Promise.all(Object.keys(self.more).map(function (id) { return self.fetchTask(id); }));
        })
        .catch(function () { /* the next event or poll tries again */ })
        .then(function () { self.pending = null; });
    }, delay === undefined ? 250 : delay);
  };

  RunPage.prototype.poll = function () {
    var self = this;
    if (this.poller || this.finished()) return;
    this.mode("polling", "The live connection is not available: checking every 2 s");
    this.poller = setInterval(function () {
      if (self.finished()) self.stopPolling(); else self.refresh(0);
    }, POLL_MS);
    this.refresh(0);
  };

  RunPage.prototype.stopPolling = function () {
    if (this.poller) { clearInterval(this.poller); this.poller = null; }
  };

  RunPage.prototype.connect = function () {
    var self = this;
    if (typeof window.io !== "function") { this.poll(); return; }
    var socket = window.io("/runs", { transports: ["polling", "websocket"], timeout: 5000 });
    socket.on("connect", function () {
      socket.emit("join", { run_id: self.id }, function (answer) {
        if (answer && answer.ok) {
          self.stopPolling();
          self.mode("live", "Updates arrive as they happen");
          self.apply(answer.run, false);
          self.refresh();
        } else {
          socket.disconnect();
          self.poll();
        }
      });
    });
    socket.on("run", function (run) {
      self.apply(run, false);
      self.refresh();
    });
    socket.on("connect_error", function () { self.poll(); });
    socket.on("disconnect", function () { self.poll(); });
  };

  /* A task's panel, built from the blank one when the page did not draw it (a large
   * run's page draws the first tasks' panels only). */
  RunPage.prototype.build = function (id) {
    var blank = document.getElementById("task-panel-template");
    var svg = document.getElementById("run-graph");
    if (!blank || !svg || !id) return null;
    var graph = JSON.parse(svg.getAttribute("data-graph") || "{}");
    var node = (graph.nodes || []).filter(function (n) { return n.id === id; })[0];
    if (!node) return null;
    var panel = blank.content.firstElementChild.cloneNode(true);
    panel.id = "task-" + id;
    panel.setAttribute("data-task", id);
    panel.querySelectorAll("[data-task]").forEach(function (el) { el.setAttribute("data-task", id); });
    panel.querySelectorAll("a.apg-more").forEach(function (a) {
      a.setAttribute("href", a.getAttribute("href").replace("__task__", encodeURIComponent(id)));
    });
    panel.querySelector(".apg-task-title").textContent = id;
    panel.querySelector(".apg-task-type").textContent = node.type || "";
    var deps = panel.querySelector(".apg-task-deps");
    var ups = (graph.edges || []).filter(function (e) { return e[1] === id; });
    if (ups.length) {
      deps.textContent = "";
      ups.forEach(function (e) {
        var code = document.createElement("code");
        code.textContent = e[0];
        deps.appendChild(code);
        deps.appendChild(document.createTextNode(" "));
      });
    }
    blank.parentNode.insertBefore(panel, blank);
    this.apply(this.state, false);
    var full = this.full && this.full.tasks.filter(function (t) { return t.task_id === id; })[0];
    if (full && !this.more[id]) { this.items(panel, full, true); this.fill(panel, full); }
    return panel;
  };

  RunPage.prototype.select = function (id, remember) {
    var self = this;
    if (!this.task(id) && !this.build(id)) return;
    this.root.querySelectorAll(".apg-task-detail").forEach(function (p) {
      show(p, p.getAttribute("data-task") === id);
    });
    this.root.querySelectorAll(".apg-task-item").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("data-task") === id);
    });
    if (this.graph) this.graph.select(id);
    if (remember && window.history.replaceState) {
      window.history.replaceState(null, "", "?task=" + encodeURIComponent(id));
    }
    self.selected = id;
  };

  RunPage.prototype.start = function () {
    var self = this;
    this.root.addEventListener("click", function (event) {
      var more = event.target.closest(".apg-more[data-more]");
      if (more) {
        event.preventDefault();
        self.loadMore(more.getAttribute("data-task"), more.getAttribute("data-more"));
        return;
      }
      var target = event.target.closest(".apg-node, .apg-task-item, .apg-tl-row[data-task]");
      if (!target) return;
      event.preventDefault();
      self.select(target.getAttribute("data-task"), true);
      if (!target.classList.contains("apg-task-item")) {
        var panel = self.task(target.getAttribute("data-task"));
        if (panel && panel.getBoundingClientRect().top > window.innerHeight) {
          panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
        }
      }
    });
    this.root.addEventListener("keydown", function (event) {
      var node = event.target.closest(".apg-node");
      if (node && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        self.select(node.getAttribute("data-task"), true);
      }
    });
    this.root.querySelectorAll("table.apg-stack").forEach(labelCells);
    this.select(this.root.getAttribute("data-selected"), false);
    this.apply(this.state, false);
    this.refresh(0);  // errors of items and compensations come with the API only
    this.connect();
  };

  /* -- every page ------------------------------------------------------------------ */
  function init() {
    var root = document.getElementById("run-page");
    if (root) {
      var page = new RunPage(root);
      window.apgRunPage = page;
      page.start();
    }
    document.querySelectorAll("tr.apg-clickable[data-href]").forEach(function (row) {
      row.addEventListener("click", function (event) {
        if (event.target.closest("a, button, input, form")) return;
        window.location.href = row.getAttribute("data-href");
      });
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
