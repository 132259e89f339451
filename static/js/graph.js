/* Task graphs as SVG, laid out by dagre (static/vendor/dagre): ranks left to right, and
 * every edge follows the points dagre routes it through, so an edge that skips ranks
 * passes between boxes instead of through them.
 *
 * The server sends only what is in the graph (capability/runs/graph.py) as JSON in the
 * <svg data-graph> attribute: nodes {id, type, status, for_each, items} and edges
 * [from, to]. A node with a status (a run's page) is coloured by it and focusable, and
 * run_page.js updates it live through the object apgGraph.of(svg) returns; a node
 * without one (a workflow's page, no run yet) is drawn in a neutral colour.
 * A static file, not an inline script: the Content-Security-Policy allows 'self' only. */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var TEXT_X = 16;            // after the status bar
  var RIGHT = 12;             // room after the longest line
  var MIN_W = 150, MAX_W = 280;
  var H = 46, H_ITEMS = 62;   // two lines; three with a for_each's element count
  // The widest status label: a node keeps its width whatever status it is given later.
  var WIDEST_STATUS = "waiting approval";
  // A graph a little wider than its box is shrunk to fit, down to this scale; a wider one
  // (a phone, a long pipeline) keeps its size and scrolls inside its box.
  var MIN_SCALE = 0.8;

  function label(status) { return (status || "").replace(/_/g, " "); }

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function itemsText(node) {
    var n = node.items;
    // Before a run expands the list it has no elements yet: "0 items" would mislead.
    if (n === null || n === undefined || (n === 0 && node.status && node.status !== "succeeded")) {
      return "for_each";
    }
    return "for_each \u00b7 " + n + (n === 1 ? " item" : " items");
  }

  function metaText(node, status) {
    return status === null ? node.type : node.type + " \u00b7 " + label(status);
  }

  function titleText(node) {
    var text = node.id + " (" + node.type + ")";
    if (node.status) text += ": " + label(node.status);
    if (node.for_each) text += ", " + itemsText(node);
    return text;
  }

  /* Text widths from the browser's own font metrics; an estimate where it cannot
   * measure (an svg that is not displayed). */
  function Measure(svg) {
    // Inside a node group: the node's text styles (font size, weight) apply to it.
    this.group = el("g", { "class": "apg-node", visibility: "hidden" }, svg);
    this.probe = el("text", {}, this.group);
  }
  Measure.prototype.width = function (text, className, perChar) {
    this.probe.setAttribute("class", className);
    this.probe.textContent = text;
    var w = this.probe.getComputedTextLength();
    return w > 0 ? w : text.length * perChar;
  };
  Measure.prototype.done = function () { this.group.parentNode.removeChild(this.group); };

  /* The id cut with an ellipsis to fit the widest box. */
  function fitted(measure, id) {
    var room = MAX_W - TEXT_X - RIGHT;
    if (measure.width(id, "apg-node-id", 7.6) <= room) return id;
    var text = id;
    while (text.length > 1 && measure.width(text + "\u2026", "apg-node-id", 7.6) > room) {
      text = text.slice(0, -1);
    }
    return text + "\u2026";
  }

  /* A curve through dagre's points (a uniform B-spline, as d3's curveBasis): it starts
   * and ends at the boxes and stays inside the hull of the points dagre kept clear. */
  function path(points) {
    var p = points, d = "M" + p[0].x + "," + p[0].y;
    if (p.length === 2) return d + "L" + p[1].x + "," + p[1].y;
    d += "L" + (5 * p[0].x + p[1].x) / 6 + "," + (5 * p[0].y + p[1].y) / 6;
    for (var i = 2; i < p.length; i++) {
      var a = p[i - 2], b = p[i - 1], c = p[i];
      d += "C" + (2 * a.x + b.x) / 3 + "," + (2 * a.y + b.y) / 3 + " " +
        (a.x + 2 * b.x) / 3 + "," + (a.y + 2 * b.y) / 3 + " " +
        (a.x + 4 * b.x + c.x) / 6 + "," + (a.y + 4 * b.y + c.y) / 6;
    }
    var y = p[p.length - 2], z = p[p.length - 1];
    d += "C" + (2 * y.x + z.x) / 3 + "," + (2 * y.y + z.y) / 3 + " " +
      (y.x + 2 * z.x) / 3 + "," + (y.y + 2 * z.y) / 3 + " " +
      (y.x + 5 * z.x) / 6 + "," + (y.y + 5 * z.y) / 6;
    return d + "L" + z.x + "," + z.y;
  }

  function Graph(svg) {
    this.svg = svg;
    this.data = JSON.parse(svg.getAttribute("data-graph"));
    this.nodes = {};
    this.draw();
  }

  Graph.prototype.draw = function () {
    var svg = this.svg, self = this;
    var nodes = this.data.nodes, edges = this.data.edges;
    svg.textContent = "";
    var defs = el("defs", {}, svg);
    var marker = el("marker", {
      id: "apg-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "8",
      markerHeight: "8", orient: "auto-start-reverse"
    }, defs);
    el("path", { d: "M0,1 L9,5 L0,9 z", "class": "apg-arrow-head" }, marker);

    var measure = new Measure(svg);
    var g = new window.dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 48, edgesep: 14, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(function () { return {}; });
    nodes.forEach(function (node) {
      var shown = fitted(measure, node.id);
      var lines = [measure.width(shown, "apg-node-id", 7.6)];
      lines.push(measure.width(metaText(node, node.status === null ? null : WIDEST_STATUS),
                               "apg-node-meta", 6.2));
      if (node.for_each) lines.push(measure.width("for_each \u00b7 99999 items", "apg-node-meta", 6.2));
      var width = Math.min(MAX_W, Math.max(MIN_W, Math.ceil(TEXT_X + Math.max.apply(null, lines) + RIGHT)));
      g.setNode(node.id, { width: width, height: node.for_each ? H_ITEMS : H, shown: shown });
    });
    measure.done();
    edges.forEach(function (e) { g.setEdge(e[0], e[1]); });
    window.dagre.layout(g);

    var size = g.graph();
    this.width = Math.ceil(size.width);
    this.height = Math.ceil(size.height);
    svg.setAttribute("viewBox", "0 0 " + this.width + " " + this.height);
    this.fit();

    g.edges().forEach(function (e) {
      el("path", {
        "class": "apg-edge", d: path(g.edge(e).points), "data-from": e.v, "data-to": e.w,
        "marker-end": "url(#apg-arrow)"
      }, svg);
    });
    nodes.forEach(function (node) {
      var box = g.node(node.id);
      self.nodes[node.id] = self.drawNode(node, box);
    });
  };

  Graph.prototype.drawNode = function (node, box) {
    var live = node.status !== null;
    var group = el("g", {
      "class": "apg-node " + (live ? "apg-st-" + node.status : "apg-node-static"),
      "data-task": node.id,
      transform: "translate(" + (box.x - box.width / 2) + "," + (box.y - box.height / 2) + ")"
    }, this.svg);
    if (live) {  // a run's page: a task to open, with the mouse or the keyboard
      group.setAttribute("tabindex", "0");
      group.setAttribute("role", "button");
      group.setAttribute("aria-label", "task " + node.id);
    }
    el("title", {}, group).textContent = titleText(node);
    el("rect", { "class": "apg-node-box", width: box.width, height: box.height, rx: 6, ry: 6 }, group);
    el("rect", { "class": "apg-node-bar", width: 6, height: box.height, rx: 3, ry: 3 }, group);
    el("text", { "class": "apg-node-id", x: TEXT_X, y: 19 }, group).textContent = box.shown;
    var meta = el("text", { "class": "apg-node-meta", x: TEXT_X, y: 36 }, group);
    el("tspan", { "class": "apg-node-type" }, meta).textContent = node.type;
    if (live) {
      meta.appendChild(document.createTextNode(" \u00b7 "));
      el("tspan", { "class": "apg-node-status" }, meta).textContent = label(node.status);
    }
    if (node.for_each) {
      el("text", { "class": "apg-node-meta apg-node-items", x: TEXT_X, y: 52 }, group)
        .textContent = itemsText(node);
    }
    return { data: node, el: group };
  };

  /* The drawn size: natural, or shrunk to the width of the box (not below MIN_SCALE). */
  Graph.prototype.fit = function () {
    var box = this.svg.parentNode, room = box.clientWidth;
    if (room) {
      var style = window.getComputedStyle(box);
      room -= parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    }
    var ratio = room > 0 ? room / this.width : 1;
    // Shrinking is only worth it when it makes the graph fit: a scrolled one stays legible.
    var scale = ratio >= 1 || ratio < MIN_SCALE ? 1 : ratio;
    this.svg.setAttribute("width", Math.floor(this.width * scale));
    this.svg.setAttribute("height", Math.ceil(this.height * scale));
  };

  /* A task's new status and element count (from a live event or the API). */
  Graph.prototype.update = function (id, status, items) {
    var entry = this.nodes[id];
    if (!entry || entry.data.status === null) return;
    var node = entry.data, group = entry.el;
    node.status = status;
    if (node.for_each) {
      node.items = items;
      group.querySelector(".apg-node-items").textContent = itemsText(node);
    }
    Array.prototype.slice.call(group.classList).forEach(function (c) {
      if (c.indexOf("apg-st-") === 0) group.classList.remove(c);
    });
    group.classList.add("apg-st-" + status);
    group.querySelector(".apg-node-status").textContent = label(status);
    group.querySelector("title").textContent = titleText(node);
  };

  Graph.prototype.select = function (id) {
    var nodes = this.nodes;
    Object.keys(nodes).forEach(function (key) {
      nodes[key].el.classList.toggle("apg-selected", key === id);
    });
  };

  /* The graph of an <svg data-graph>, drawn on first use. */
  function of(svg) {
    if (!svg.apgGraph) svg.apgGraph = new Graph(svg);
    return svg.apgGraph;
  }

  window.apgGraph = { of: of };

  function init() {
    var svgs = document.querySelectorAll("svg[data-graph]");
    svgs.forEach(of);
    window.addEventListener("resize", function () {
      svgs.forEach(function (svg) { of(svg).fit(); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
