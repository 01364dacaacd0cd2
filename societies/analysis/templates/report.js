// The transcript browser. Model text is untrusted: it is only ever set with textContent.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var selRun = $("sel-run"), selSoc = $("sel-society"), selStrat = $("sel-strategy");
  var selUnit = $("sel-unit"), onlyFlipped = $("only-flipped");

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function fill(select, values, labels) {
    var keep = select.value;
    while (select.firstChild) { select.removeChild(select.firstChild); }
    values.forEach(function (v, i) {
      var opt = el("option", labels ? labels[i] : v);
      opt.value = String(v);
      select.appendChild(opt);
    });
    if (values.map(String).indexOf(keep) >= 0) { select.value = keep; }
  }
  function unique(list) {
    var seen = {}, out = [];
    list.forEach(function (x) { if (!seen.hasOwnProperty(x)) { seen[x] = 1; out.push(x); } });
    return out;
  }
  function candidates() {
    var run = Number(selRun.value);
    return data.units.filter(function (u) {
      return u.run === run && (!onlyFlipped.checked || u.flipped);
    });
  }
  function refresh() {
    var units = candidates();
    fill(selSoc, unique(units.map(function (u) { return u.society; })));
    units = units.filter(function (u) { return u.society === selSoc.value; });
    fill(selStrat, unique(units.map(function (u) { return u.strategy; })));
    units = units.filter(function (u) { return u.strategy === selStrat.value; });
    fill(selUnit, units.map(function (u) { return u.id; }), units.map(function (u) {
      return u.question + " (repeat " + u.repeat + ")" + (u.flipped ? " · majority flipped" : "");
    }));
    render();
  }
  function cellFor(turn) {
    var cls = turn.error ? "noanswer" : (turn.correct ? "correct" : (turn.answer === null ? "noanswer" : "wrong"));
    var td = el("td", null, cls);
    var head = turn.pattern + (turn.saw.length ? " · saw " + turn.saw.join(", ") : " · saw nothing");
    td.appendChild(el("div", head, "meta"));
    td.appendChild(el("pre", turn.reply, "reply"));
    var ans = el("div", null, "answer");
    ans.appendChild(el("span", "answer: "));
    ans.appendChild(el("code", turn.raw === null ? "–" : turn.raw, "raw"));
    ans.appendChild(el("span", " → "));
    ans.appendChild(el("code", turn.answer === null ? "none" : turn.answer, "canonical"));
    ans.appendChild(el("span", turn.correct ? " ✓ correct" : " ✗ not correct"));
    td.appendChild(ans);
    var extra = [];
    if (turn.finish !== "stop") { extra.push("finish: " + turn.finish); }
    if (turn.error) { extra.push("error: " + turn.error); }
    if (extra.length) { td.appendChild(el("div", extra.join(" · "), "meta")); }
    return td;
  }
  function render() {
    var table = $("transcript");
    while (table.firstChild) { table.removeChild(table.firstChild); }
    var unit = null;
    data.units.forEach(function (u) { if (u.id === selUnit.value && u.run === Number(selRun.value)) { unit = u; } });
    if (!unit) { $("unit-meta").textContent = "no unit matches"; return; }
    $("unit-meta").textContent = unit.id + " · gold " + unit.gold + " · status " + unit.status +
      (unit.error ? " (" + unit.error + ")" : "");
    var head = el("tr");
    head.appendChild(el("th", "agent"));
    unit.rounds.forEach(function (r, k) { head.appendChild(el("th", "round " + k)); });
    table.appendChild(head);
    unit.agents.forEach(function (name, i) {
      var tr = el("tr", null, "agent-row");
      tr.appendChild(el("th", name + (unit.traits[i] ? " (" + unit.traits[i] + ")" : "")));
      unit.rounds.forEach(function (turns) {
        tr.appendChild(turns[i] ? cellFor(turns[i]) : el("td", "no turn (branch ended)", "noanswer"));
      });
      table.appendChild(tr);
    });
    var maj = el("tr", null, "majority-row");
    maj.appendChild(el("th", "majority"));
    unit.majority.forEach(function (m) { maj.appendChild(el("td", m === null ? "none" : m)); });
    table.appendChild(maj);
  }
  fill(selRun, data.runs.map(function (n, i) { return i; }), data.runs);
  selRun.addEventListener("change", refresh);
  selSoc.addEventListener("change", refresh);
  selStrat.addEventListener("change", refresh);
  onlyFlipped.addEventListener("change", refresh);
  selUnit.addEventListener("change", render);
  if (data.left_out) {
    $("left-out").textContent = data.left_out + " units are not embedded (the page keeps the first {{ max_units }} of each run).";
  }
  // A link can open one transcript: report.html#unit=<unit id>&run=<index>&flipped=1
  var wanted = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var eq = part.indexOf("=");
    if (eq > 0) { wanted[part.slice(0, eq)] = decodeURIComponent(part.slice(eq + 1)); }
  });
  var run = wanted.run ? Number(wanted.run) : 0;
  var target = data.units.filter(function (u) { return u.id === wanted.unit && u.run === run; })[0];
  onlyFlipped.checked = wanted.flipped === "1" && (!target || target.flipped);
  if (target) {
    selRun.value = String(run);
    refresh();
    selSoc.value = target.society;
    refresh();
    selStrat.value = target.strategy;
    refresh();
    selUnit.value = target.id;
    render();
  } else {
    refresh();
  }
}());
