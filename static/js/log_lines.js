/* An attempt's log lines ({at, level, message}) drawn into a box: one row per line, text
   nodes only (a log is what a task wrote, never markup). The run page's log
   (task_log.js) and the editor's "Test this step" (step_test.js) draw with it. */
(function () {
  "use strict";

  function pad(n, width) { n = String(n); while (n.length < width) n = "0" + n; return n; }

  /* The line's time of day in the reader's zone, to the millisecond. */
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso || "";
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) +
      "." + pad(d.getMilliseconds(), 3);
  }

  function render(box, lines) {
    box.textContent = "";
    (lines || []).forEach(function (line) {
      var row = document.createElement("div");
      row.className = "apg-log-line apg-log-" + line.level;
      var at = document.createElement("time");
      at.setAttribute("datetime", line.at);
      at.textContent = clock(line.at);
      var level = document.createElement("span");
      level.className = "apg-log-level";
      level.textContent = line.level;
      var message = document.createElement("span");
      message.className = "apg-log-message";
      message.textContent = line.message;
      row.appendChild(at);
      row.appendChild(level);
      row.appendChild(message);
      box.appendChild(row);
    });
    if (!box.children.length) box.textContent = box.getAttribute("data-empty") || "";
  }

  window.APGLogLines = { render: render, clock: clock };
})();
