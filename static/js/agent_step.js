/* A run's page: the box of an agent step waiting for its output (templates/runs/page.html).
 * Submits the output (JSON typed in the box) to POST /api/v1/runs/<id>/tasks/<task>/complete,
 * or fails the step through .../fail: the same API an agent uses. A refusal (the output
 * breaks the step's schema or a check, the step is no longer waiting, not allowed) is
 * listed in place, every violation with its path; the step keeps waiting. run_page.js
 * shows and hides the box as the run changes (apgAgentStep.update) and, when the step
 * began to wait after the page was drawn, its prompt is read from the task's API.
 * A static file, not an inline script: the Content-Security-Policy allows 'self' only. */
(function () {
  "use strict";

  function show(el, on) { if (el) el.hidden = !on; }

  function pretty(value) { return JSON.stringify(value, null, 2); }

  function refused(form, message, errors) {
    var box = form.querySelector(".apg-agent-refused");
    var list = box.querySelector(".apg-agent-refused-errors");
    box.querySelector(".apg-agent-refused-message").textContent = message;
    list.textContent = "";
    (errors || []).forEach(function (e) {
      var li = document.createElement("li");
      var code = document.createElement("code");
      code.textContent = e.path;
      li.appendChild(code);
      li.appendChild(document.createTextNode(" " + e.message));
      list.appendChild(li);
    });
    show(box, true);
  }

  function post(form, url, body) {
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    show(form.querySelector(".apg-agent-refused"), false);
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json",
                 "X-CSRFToken": form.getAttribute("data-csrf") || "" },
      body: JSON.stringify(body)
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        buttons.forEach(function (b) { b.disabled = false; });
        if (res.ok) {
          // The run's live update redraws the page; reload if no update comes.
          var box = form.closest("[data-agent]");
          if (box) {
            var done = document.createElement("p");
            done.className = "apg-agent-done";
            done.textContent = "Sent: the step is " + (data.result ? data.result.status : "done") + ".";
            form.replaceWith(done);
          }
          return;
        }
        refused(form, data.message || ("Refused (HTTP " + res.status + ")"), data.errors);
      });
    }).catch(function (err) {
      buttons.forEach(function (b) { b.disabled = false; });
      refused(form, "Could not reach the server: " + err, []);
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target.closest && event.target.closest(".apg-agent-form");
    if (!form) return;
    event.preventDefault();
    var text = form.querySelector(".apg-agent-output").value;
    var output;
    try {
      output = JSON.parse(text);
    } catch (err) {
      refused(form, "The output is not valid JSON", [{ path: "output", message: String(err.message || err) }]);
      return;
    }
    post(form, form.getAttribute("data-complete-url"), { output: output });
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".apg-agent-fail");
    if (!button) return;
    var form = button.closest(".apg-agent-form");
    var reason = form.querySelector(".apg-agent-error").value.trim();
    if (!reason) {
      refused(form, "Say why the step failed", [{ path: "error", message: "required" }]);
      return;
    }
    post(form, form.getAttribute("data-fail-url"), { error: reason });
  });

  function fill(box, prompt) {
    box.querySelector(".apg-agent-instructions").textContent = prompt.instructions || "";
    box.querySelector(".apg-agent-inputs").textContent = pretty(prompt.inputs || {});
    box.querySelector(".apg-agent-schema").textContent = pretty(prompt.output_schema || {});
    var checks = prompt.checks || [];
    show(box.querySelector(".apg-agent-checks-box"), checks.length > 0);
    box.querySelector(".apg-agent-checks").textContent = checks.length ? pretty(checks) : "";
    show(box.querySelector(".apg-agent-hint"), !!prompt.model_hint);
    box.querySelector(".apg-agent-hint-value").textContent = prompt.model_hint || "";
    box.setAttribute("data-filled", "1");
  }

  window.apgAgentStep = {
    update: function (panel, task, live) {
      var box = panel.querySelector("[data-agent]");
      if (!box) return;
      var waiting = live && task.status === "waiting_input";
      show(box, waiting);
      if (!waiting) return;
      if (task.prompt) { fill(box, task.prompt); return; }
      if (box.getAttribute("data-filled") === "1") return;
      fetch(box.getAttribute("data-task-url"), { credentials: "same-origin",
                                                 headers: { Accept: "application/json" } })
        .then(function (res) { return res.ok ? res.json() : null; })
        .then(function (data) { if (data && data.result && data.result.prompt) fill(box, data.result.prompt); })
        .catch(function () { /* the next update tries again */ });
    }
  };
})();
