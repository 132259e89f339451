/* The task palette (Workflows -> Task types): the filter box. A type stays when every
 * word typed is in its name, description, field names or connection types (the
 * data-search text the page wrote). Without script, every type is listed. */
(function () {
  "use strict";

  function init() {
    var input = document.getElementById("task-type-filter");
    if (!input) return;
    var types = Array.prototype.slice.call(document.querySelectorAll(".apg-type[data-search]"));
    var chips = document.querySelectorAll("#task-type-index a[data-type]");
    var count = document.getElementById("task-type-count");
    var none = document.getElementById("no-task-type");

    function apply() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = {};
      var total = 0;
      types.forEach(function (section) {
        var text = section.getAttribute("data-search");
        var match = words.every(function (word) { return text.indexOf(word) !== -1; });
        section.hidden = !match;
        shown[section.getAttribute("data-type")] = match;
        if (match) total += 1;
      });
      chips.forEach(function (chip) { chip.hidden = !shown[chip.getAttribute("data-type")]; });
      count.textContent = words.length ? total + " of " + types.length + " types" : types.length + " types";
      none.hidden = total > 0;
    }

    input.addEventListener("input", apply);
    if (input.value) apply(); // a value the browser restored on "back"
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
