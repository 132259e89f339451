/* Workflow pages: the CodeMirror editor (YAML/JSON), "Validate" with errors shown on
 * their lines, read-only definitions, and confirm dialogs on destructive forms.
 * A static file, not an inline script: the Content-Security-Policy allows 'self' only. */
(function () {
  "use strict";

  var GUTTER = "apg-error-gutter";

  function modeFor(text) {
    return /^\s*[{[]/.test(text) ? { name: "javascript", json: true } : "yaml";
  }

  function spacesForTab(cm) {
    if (cm.somethingSelected()) {
      cm.indentSelection("add");
    } else {
      cm.replaceSelection(Array(cm.getOption("indentUnit") + 1).join(" "), "end");
    }
  }

  /* Errors: gutter markers, highlighted lines and the list under the editor. */
  function ErrorView(cm, box) {
    this.cm = cm;
    this.box = box;
    this.list = box.querySelector("#error-list");
    this.title = box.querySelector("#errors-title span");
    this.lines = [];
  }

  ErrorView.prototype.clear = function () {
    var cm = this.cm;
    cm.clearGutter(GUTTER);
    this.lines.forEach(function (handle) {
      cm.removeLineClass(handle, "background", "apg-error-line");
    });
    this.lines = [];
  };

  ErrorView.prototype.mark = function (errors) {
    var cm = this.cm;
    var self = this;
    var byLine = {};
    this.clear();
    errors.forEach(function (error) {
      var line = parseInt(error.line, 10);
      if (!line || line > cm.lineCount()) return;
      (byLine[line] = byLine[line] || []).push(error.message);
    });
    Object.keys(byLine).forEach(function (line) {
      var marker = document.createElement("span");
      marker.className = "apg-error-marker";
      marker.title = byLine[line].join("\n");
      marker.setAttribute("data-line", line);
      marker.innerHTML = '<i class="fa fa-times-circle"></i>';
      cm.setGutterMarker(line - 1, GUTTER, marker);
      self.lines.push(cm.addLineClass(line - 1, "background", "apg-error-line"));
    });
  };

  ErrorView.prototype.show = function (message, errors) {
    var list = this.list;
    list.innerHTML = "";
    errors.forEach(function (error) {
      var item = document.createElement("li");
      var link = document.createElement("a");
      var path = document.createElement("code");
      item.className = "apg-error";
      item.setAttribute("data-line", error.line || "");
      item.setAttribute("data-message", error.message);
      link.href = "#";
      link.className = "apg-error-line-link";
      link.textContent = error.line ? "line " + error.line : "document";
      path.textContent = error.path;
      item.appendChild(link);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(path);
      item.appendChild(document.createTextNode(" " + error.message));
      list.appendChild(item);
    });
    this.title.textContent = (message || "The definition has errors") +
      (errors.length ? " (" + errors.length + ")" : "");
    this.box.classList.toggle("hidden", !message && !errors.length);
    this.mark(errors);
  };

  ErrorView.prototype.fromPage = function () {
    var errors = [];
    this.list.querySelectorAll("li[data-line]").forEach(function (item) {
      errors.push({
        line: item.getAttribute("data-line"),
        message: item.getAttribute("data-message") || item.textContent.trim(),
      });
    });
    this.mark(errors);
  };

  function setStatus(element, kind, text) {
    element.className = "apg-check-status apg-check-" + kind;
    element.textContent = text;
  }

  function csrfToken(form) {
    var input = form && form.querySelector("input[name=csrf_token]");
    return input ? input.value : "";
  }

  function validate(cm, errors, button, status) {
    var form = document.getElementById("workflow-form");
    setStatus(status, "busy", "Checking\u2026");
    button.disabled = true;
    return fetch(button.getAttribute("data-check-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(form) },
      body: JSON.stringify({ definition: cm.getValue() }),
    })
      .then(function (response) {
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      })
      .then(function (verdict) {
        if (verdict.valid) {
          errors.show("", []);
          setStatus(status, "ok", "Valid definition");
        } else {
          errors.show(verdict.message, verdict.errors || []);
          setStatus(status, "bad", (verdict.errors || []).length + " error(s)");
        }
      })
      .catch(function (problem) {
        setStatus(status, "bad", "Could not check: " + problem.message);
      })
      .then(function () {
        button.disabled = false;
      });
  }

  function initEditor(textarea) {
    var cm = CodeMirror.fromTextArea(textarea, {
      mode: modeFor(textarea.value),
      lineNumbers: true,
      indentUnit: 2,
      tabSize: 2,
      matchBrackets: true,
      viewportMargin: Infinity,
      gutters: [GUTTER, "CodeMirror-linenumbers"],
    });
    var box = document.getElementById("workflow-errors");
    var errors = new ErrorView(cm, box);
    var button = document.getElementById("validate");
    var status = document.getElementById("check-status");
    cm.on("change", function () {
      var mode = modeFor(cm.getValue());
      if (JSON.stringify(mode) !== JSON.stringify(cm.getOption("mode"))) cm.setOption("mode", mode);
      if (status.textContent) setStatus(status, "stale", "Edited since the last check");
    });
    cm.setOption("extraKeys", {
      Tab: spacesForTab,
      "Ctrl-Enter": function () { button.click(); },
      "Cmd-Enter": function () { button.click(); },
    });
    button.addEventListener("click", function () {
      validate(cm, errors, button, status);
    });
    box.addEventListener("click", function (event) {
      var link = event.target.closest(".apg-error-line-link");
      if (!link) return;
      event.preventDefault();
      var line = parseInt(link.parentNode.getAttribute("data-line"), 10);
      if (line) {
        cm.setCursor({ line: line - 1, ch: 0 });
        cm.scrollIntoView({ line: line - 1, ch: 0 }, 80);
      }
      cm.focus();
    });
    document.getElementById("workflow-form").addEventListener("submit", function () {
      document.getElementById("save").disabled = true;
    });
    errors.fromPage();
    // The help of the task type under the cursor (task_help.js, on the editor only).
    if (window.APGTaskHelp) window.APGTaskHelp.attach(cm);
  }

  function initViewer(textarea) {
    CodeMirror.fromTextArea(textarea, {
      mode: modeFor(textarea.value),
      lineNumbers: true,
      readOnly: true,
      viewportMargin: Infinity,
    });
  }

  function init() {
    document.querySelectorAll("textarea[data-codemirror]").forEach(function (textarea) {
      if (textarea.getAttribute("data-codemirror") === "edit") {
        initEditor(textarea);
      } else {
        initViewer(textarea);
      }
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
