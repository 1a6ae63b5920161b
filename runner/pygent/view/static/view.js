// pygent view: live steps over SSE and a quick filter of the runs list.
// Written for this project; the pages work without it (it only adds live updates and filtering).
"use strict";
(function () {
  var live = document.body.getAttribute("data-live");
  var steps = document.getElementById("steps");
  if (live && steps && window.EventSource) {
    var source = new EventSource(live);
    source.addEventListener("step", function (ev) {
      // Server-rendered, escaped HTML of one finished step (pages.step_html).
      var box = document.createElement("div");
      box.innerHTML = ev.data;
      while (box.firstChild) { steps.appendChild(box.firstChild); }
    });
    source.addEventListener("end", function () {
      source.close();
      var status = document.getElementById("status");
      if (status) { status.textContent = "ended (reload for totals)"; }
    });
  }
  var q = document.getElementById("q");
  var table = document.getElementById("runs");
  if (q && table) {
    q.addEventListener("input", function () {
      var needle = q.value.toLowerCase();
      var rows = table.querySelectorAll("tbody tr");
      for (var i = 0; i < rows.length; i++) {
        var task = rows[i].querySelector(".task").textContent.toLowerCase();
        rows[i].hidden = needle !== "" && task.indexOf(needle) < 0;
      }
    });
  }
})();
