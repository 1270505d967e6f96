// Refresh the dashboard body in place from its fragment URL (no full page reload).
(function () {
  "use strict";
  function start() {
    var box = document.getElementById("console-dashboard");
    if (!box) { return; }
    var url = box.getAttribute("data-fragment-url");
    var every = parseInt(box.getAttribute("data-refresh-s") || "5", 10) * 1000;
    function refresh() {
      fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html !== null) {
            box.innerHTML = html;
            box.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* keep the last view; try again next tick */ })
        .finally(function () { window.setTimeout(refresh, every); });
    }
    window.setTimeout(refresh, every);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
