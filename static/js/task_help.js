/* The editor's help panel: the help of the task type under the cursor.
 *
 * The page carries every type's help as a <template id="task-help-TYPE"> (the same
 * macro as the task palette renders); this script finds the task the cursor is in
 * (YAML or JSON) and shows its type's help in #task-help. Each time the task under the
 * cursor changes, #task-help gets an "apg:task-focus" event whose detail is that task,
 * {type, id, known, from, to} (lines, 0-based), or null: a control for "the task under
 * the cursor" listens to it and goes in #task-help-actions.
 * A static file, not an inline script: the Content-Security-Policy allows 'self' only. */
(function () {
  "use strict";

  var TYPE_LINE = /^(\s*)(-\s+)?type\s*:\s*["']?([A-Za-z0-9_]+)["']?\s*(#.*)?$/;
  var ID_LINE = /^\s*(?:-\s+)?id\s*:\s*["']?([^"'\s#]+)/;

  function indent(line) {
    return line.match(/^\s*/)[0].length;
  }

  function blank(line) {
    return /^\s*(#.*)?$/.test(line);
  }

  /* The column where the keys of a line's mapping start ("  - id: a": 4). */
  function keyColumn(line) {
    var item = line.match(/^(\s*-\s+)/);
    return item ? item[1].length : indent(line);
  }

  /* The top-level key a line sits under (YAML). */
  function topKey(lines, i) {
    for (var j = i; j >= 0; j -= 1) {
      // A "- " at the margin is an item of an unindented list (tasks:\n- id: a).
      if (!blank(lines[j]) && indent(lines[j]) === 0 && !/^-(\s|$)/.test(lines[j])) {
        var key = lines[j].match(/^([A-Za-z_][\w-]*)\s*:/);
        return key ? key[1] : null;
      }
    }
    return null;
  }

  /* Every mapping of a YAML text that has a `type:` key, with the lines it spans. */
  function yamlTasks(text) {
    var lines = text.split("\n");
    var found = [];
    lines.forEach(function (line, i) {
      var typed = line.match(TYPE_LINE);
      if (!typed || topKey(lines, i) !== "tasks") return;
      var col = keyColumn(line);
      var start = i;
      // Up to the line that starts the mapping: its "- " item, or its first key.
      if (!typed[2]) {
        for (var j = i - 1; j >= 0; j -= 1) {
          if (blank(lines[j])) continue;
          if (/^\s*-\s+\S/.test(lines[j]) && keyColumn(lines[j]) === col) { start = j; break; }
          if (indent(lines[j]) < col) break;
          start = j;
        }
      }
      // Down to its last line: the next item, or a key less indented, ends it.
      var end = i;
      for (var k = i + 1; k < lines.length; k += 1) {
        if (blank(lines[k])) continue;
        if (indent(lines[k]) < col) break;
        end = k;
      }
      var id = null;
      for (var m = start; m <= end && id === null; m += 1) {
        var named = lines[m].match(ID_LINE);
        if (named && keyColumn(lines[m]) === col) id = named[1];
      }
      found.push({ type: typed[3], id: id, from: start, to: end, depth: col });
    });
    return found;
  }

  /* Every object of a JSON text under "tasks" (a task, or its "compensate") that has a
   * "type", with the lines it spans; an object still being typed runs to the end. */
  function jsonTasks(text, lineOf) {
    var found = [];
    var stack = [];
    function close(obj, end) {
      var path = obj.path.join("/");
      if (obj.kind === "{" && obj.type && (path === "tasks/[]" || path === "tasks/[]/compensate")) {
        found.push({ type: obj.type, id: obj.id, from: lineOf(obj.start), to: lineOf(end),
                     depth: obj.path.length });
      }
    }
    for (var i = 0; i < text.length; i += 1) {
      var c = text.charAt(i);
      var top = stack[stack.length - 1];
      if (c === '"') {
        var j = i + 1;
        while (j < text.length && text.charAt(j) !== '"') j += text.charAt(j) === "\\" ? 2 : 1;
        var value = text.slice(i + 1, j);
        try { value = JSON.parse('"' + value + '"'); } catch (e) { /* keep it raw */ }
        if (top && top.kind === "{") {
          if (top.awaitKey) {
            top.key = value;
            top.awaitKey = false;
          } else if (top.key === "type") {
            top.type = value;
          } else if (top.key === "id") {
            top.id = value;
          }
        }
        i = j;
      } else if (c === "{" || c === "[") {
        var path = top ? top.path.concat([top.kind === "{" ? top.key : "[]"]) : [];
        stack.push({ kind: c, start: i, path: path, awaitKey: c === "{", key: null });
      } else if (c === "}" || c === "]") {
        if (stack.length) close(stack.pop(), i);
      } else if (c === "," && top && top.kind === "{") {
        top.awaitKey = true;
      }
    }
    while (stack.length) close(stack.pop(), text.length);
    return found;
  }

  /* The task the cursor is in: of the typed mappings around the line, the innermost
   * whose type is known (a task's `compensate` before the task), else the outermost
   * (a task whose type is misspelt). */
  function taskAt(tasks, line, known) {
    var around = tasks.filter(function (t) { return t.from <= line && line <= t.to; });
    if (!around.length) return null;
    around.sort(function (a, b) { return b.depth - a.depth; });
    var hit = around.filter(function (t) { return known[t.type]; })[0] || around[around.length - 1];
    return { type: hit.type, id: hit.id, known: !!known[hit.type], from: hit.from, to: hit.to };
  }

  function TaskHelp(cm, panel) {
    this.cm = cm;
    this.panel = panel;
    this.title = panel.querySelector("#task-help-title");
    this.content = panel.querySelector("#task-help-content");
    this.empty = panel.querySelector("#task-help-empty");
    this.link = panel.querySelector("#task-help-palette");
    this.paletteUrl = panel.getAttribute("data-palette-url");
    this.known = {};
    this.tasks = [];
    this.generation = null;
    this.current = "";
    var self = this;
    document.querySelectorAll("template[id^='task-help-']").forEach(function (tpl) {
      self.known[tpl.getAttribute("data-type")] = tpl;
    });
  }

  TaskHelp.prototype.scan = function () {
    var generation = this.cm.changeGeneration();
    if (generation === this.generation) return;
    var cm = this.cm;
    var text = cm.getValue();
    this.tasks = /^\s*[{[]/.test(text)
      ? jsonTasks(text, function (index) { return cm.posFromIndex(index).line; })
      : yamlTasks(text);
    this.generation = generation;
  };

  TaskHelp.prototype.update = function () {
    this.scan();
    var task = taskAt(this.tasks, this.cm.getCursor().line, this.known);
    var key = task ? [task.type, task.id, task.from, task.to].join("|") : "";
    if (key === this.current) return;
    var typeChanged = (task && task.type) !== (this.shown || null);
    this.current = key;
    if (typeChanged) this.show(task);
    this.panel.apgTask = task;  // for a listener that joins later
    this.panel.dispatchEvent(new CustomEvent("apg:task-focus", { detail: task }));
  };

  TaskHelp.prototype.show = function (task) {
    this.shown = task ? task.type : null;
    this.content.innerHTML = "";
    this.empty.hidden = !!task;
    this.panel.setAttribute("data-type", task ? task.type : "");
    this.title.textContent = "";
    if (!task) {
      this.title.textContent = "Task type";
      this.link.href = this.paletteUrl;
      return;
    }
    var name = document.createElement("code");
    name.textContent = task.type;
    this.title.appendChild(document.createTextNode("Task type "));
    this.title.appendChild(name);
    if (task.known) {
      this.content.appendChild(this.known[task.type].content.cloneNode(true));
      this.link.href = this.paletteUrl + "#type-" + task.type;
    } else {
      var unknown = document.createElement("p");
      unknown.className = "apg-check-bad";
      unknown.id = "task-help-unknown";
      unknown.textContent = "No task type is called " + task.type + ": pick one of the task types.";
      this.content.appendChild(unknown);
      this.link.href = this.paletteUrl;
    }
  };

  /* Called by the editor once CodeMirror is up. */
  function attach(cm) {
    var panel = document.getElementById("task-help");
    if (!panel) return null;
    var help = new TaskHelp(cm, panel);
    cm.on("cursorActivity", function () { help.update(); });
    help.update();
    return help;
  }

  window.APGTaskHelp = { attach: attach, yamlTasks: yamlTasks, jsonTasks: jsonTasks, taskAt: taskAt };
})();
