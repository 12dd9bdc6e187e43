// Progressive enhancement only: the pages work without it. Keeps "time left" current.
(function () {
  "use strict";
  function update() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("datetime"));
      if (isNaN(due)) { return; }
      var minutes = Math.round((due - now) / 60000);
      var late = minutes < 0;
      var m = Math.abs(minutes);
      var d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60), r = m % 60;
      var span = d ? d + " d " + h + " h" : (h ? h + " h " + r + " min" : r + " min");
      var words = late ? el.getAttribute("data-late") : el.getAttribute("data-left");
      el.textContent = words.replace("{span}", span);
      el.classList.toggle("overdue", late);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    update();
    window.setInterval(update, 30000);
  });
})();
