/* "Test this step" in the editor (CONNECTORS.md, "Testing a step"): the task under the
   cursor (task_help.js tells it with an "apg:task-focus" event) is run on a worker with
   the params and upstream outputs written here, by POST .../tasks/<task_id>/test; the
   answer (status, output, error, log) is shown below. The saved version is what runs:
   the note says so when the editor holds changes not saved yet. */
(function () {
  "use strict";

  function byId(id) { return document.getElementById(id); }

  function parseJson(text, what) {
    var value;
    try {
      value = JSON.parse(text.trim() || "{}");
    } catch (e) {
      throw new Error(what + " is not JSON: " + e.message);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(what + " must be a JSON object");
    }
    return value;
  }

  /* The upstream tasks the task's lines read (tasks.<id>...), each with an empty output. */
  function upstreamOf(cm, task) {
    var found = {}, re = /tasks\.([A-Za-z_][A-Za-z0-9_-]*)/g, match;
    for (var line = task.from; line <= task.to && line < cm.lineCount(); line++) {
      var text = cm.getLine(line);
      while ((match = re.exec(text)) !== null) {
        if (match[1] !== task.id) found[match[1]] = { output: null };
      }
    }
    return found;
  }

  function StepTest(root, cm) {
    this.root = root;
    this.cm = cm;
    this.task = null;
    this.saved = cm.getValue();
    this.needsRun = (root.getAttribute("data-needs-run") || "").split(" ");
    this.form = byId("step-test-form");
    this.open = byId("step-test-open");
    this.note = byId("step-test-note");
  }

  StepTest.prototype.focus = function (task) {
    var same = this.task && task && this.task.id === task.id;
    this.task = task && task.known && task.id ? task : null;
    this.root.hidden = !this.task;
    if (!this.task) return;
    var blocked = this.needsRun.indexOf(task.type) >= 0;
    this.open.disabled = blocked;
    var notes = [];
    if (blocked) notes.push("A " + task.type + " task needs a run: start one to try it.");
    if (this.cm.getValue() !== this.saved) {
      notes.push("You have changes not saved: the test runs the saved version " +
        this.root.getAttribute("data-version") + ".");
    }
    this.note.textContent = notes.join(" ");
    this.note.hidden = !notes.length;
    if (!same) {
      byId("step-test-task").textContent = task.id;
      byId("step-test-upstream").value = JSON.stringify(upstreamOf(this.cm, task), null, 1);
      byId("step-test-result").hidden = true;
      if (blocked) this.toggle(false);
    }
  };

  StepTest.prototype.toggle = function (show) {
    this.form.hidden = !show;
    this.open.setAttribute("aria-expanded", show ? "true" : "false");
  };

  StepTest.prototype.problem = function (message) {
    byId("step-test-result").hidden = false;
    var status = byId("step-test-status");
    status.textContent = "not run";
    status.className = "label apg-status apg-st-failed";
    byId("step-test-took").textContent = "";
    var problem = byId("step-test-problem");
    problem.textContent = message;
    problem.hidden = false;
    byId("step-test-output").textContent = "";
    byId("step-test-error").hidden = true;
    byId("step-test-error-label").hidden = true;
    byId("step-test-log").textContent = "";
  };

  StepTest.prototype.show = function (result) {
    byId("step-test-result").hidden = false;
    byId("step-test-problem").hidden = true;
    var status = byId("step-test-status");
    status.textContent = result.status;
    status.className = "label apg-status apg-st-" + result.status;
    byId("step-test-took").textContent = "in " + Math.round(result.took_ms) + " ms, no run made";
    byId("step-test-output").textContent = result.output === null || result.output === undefined
      ? "none" : JSON.stringify(result.output, null, 2);
    var error = byId("step-test-error");
    error.textContent = result.error || "";
    error.hidden = !result.error;
    byId("step-test-error-label").hidden = !result.error;
    window.APGLogLines.render(byId("step-test-log"), result.logs);
  };

  StepTest.prototype.run = function () {
    var self = this, body;
    try {
      body = { params: parseJson(byId("step-test-params").value, "Params"),
               upstream: parseJson(byId("step-test-upstream").value, "Upstream outputs") };
    } catch (e) {
      this.problem(e.message);
      return;
    }
    var url = this.root.getAttribute("data-url").replace("__task__", encodeURIComponent(this.task.id));
    var csrf = document.querySelector("#workflow-form input[name=csrf_token]");
    var button = byId("step-test-run"), busy = byId("step-test-busy");
    button.disabled = true;
    busy.hidden = false;
    fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 "X-CSRFToken": csrf ? csrf.value : "" },
      body: JSON.stringify(body)
    })
      .then(function (r) { return r.json().then(function (data) { return { r: r, data: data }; }); })
      .then(function (answer) {
        if (answer.r.ok) {
          self.show(answer.data.result);
          return;
        }
        var errors = (answer.data.errors || []).map(function (e) {
          return (e.path ? e.path + ": " : "") + e.message;
        });
        self.problem((answer.data.message || "HTTP " + answer.r.status) +
          (errors.length ? " — " + errors.join("; ") : ""));
      })
      .catch(function (e) { self.problem("The test could not be sent: " + e.message); })
      .then(function () { button.disabled = false; busy.hidden = true; });
  };

  function start(tries) {
    var root = byId("step-test"), panel = byId("task-help");
    if (!root || !panel || !window.fetch || !window.APGLogLines) return;
    var holder = document.querySelector(".CodeMirror");
    if (!holder || !holder.CodeMirror) {  // the editor is made by a script after this one
      if (tries < 100) setTimeout(function () { start(tries + 1); }, 50);
      return;
    }
    var test = new StepTest(root, holder.CodeMirror);
    panel.addEventListener("apg:task-focus", function (event) { test.focus(event.detail); });
    if (panel.apgTask !== undefined) test.focus(panel.apgTask);
    // An edit may make the text differ from the saved version: the note says so.
    test.cm.on("changes", function () { test.focus(panel.apgTask || null); });
    test.open.addEventListener("click", function () { test.toggle(test.form.hidden); });
    byId("step-test-run").addEventListener("click", function () { test.run(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { start(0); });
  } else {
    start(0);
  }
})();
