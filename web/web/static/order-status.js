// Live status for /orders/{id}: polls the same-origin JSON endpoint (the order token travels in
// an HttpOnly cookie, never through this script) and stops at a final state. Without JS the page
// still shows the state at load time and a Refresh link.
(function () {
  "use strict";
  var section = document.getElementById("order-status");
  if (!section || !window.fetch) { return; }
  var url = section.getAttribute("data-status-url");
  var intervalMs = 2000;
  var failures = 0;

  function setText(field, value) {
    var el = section.querySelector('[data-field="' + field + '"]');
    if (!el) { return; }
    el.textContent = value || "";
  }

  function human(value, fallback) {
    return value ? String(value).replace(/_/g, " ") : fallback;
  }

  function renderHistory(history) {
    var list = document.getElementById("order-history");
    if (!list || !history) { return; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    history.forEach(function (entry) {
      var li = document.createElement("li");
      var label = document.createElement("span");
      label.textContent = entry.label;
      li.appendChild(label);
      if (entry.at) {
        var time = document.createElement("time");
        time.setAttribute("datetime", entry.at);
        time.textContent = entry.at;
        li.appendChild(document.createTextNode(" "));
        li.appendChild(time);
      }
      list.appendChild(li);
    });
  }

  function apply(data) {
    setText("title", data.title);
    setText("detail", data.detail);
    setText("status", human(data.status, ""));
    setText("payment_status", human(data.payment_status, "not started"));
    section.setAttribute("data-state", data.state);
    section.setAttribute("data-final", data.final ? "true" : "false");
    section.className = section.className.replace(/\btone-\w+/, "tone-" + data.tone);
    document.querySelectorAll("[data-show-when]").forEach(function (el) {
      el.hidden = el.getAttribute("data-show-when").split(" ").indexOf(data.state) === -1;
    });
    renderHistory(data.history);
  }

  function schedule() {
    // Back off gently while the backend is unreachable; never hammer it.
    window.setTimeout(poll, intervalMs * Math.min(1 + failures, 5));
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 404) { return null; } // cookie gone: nothing left to poll
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (!data) { return; }
        failures = 0;
        apply(data);
        if (!data.final) { schedule(); }
      })
      .catch(function () { failures += 1; schedule(); });
  }

  if (section.getAttribute("data-final") !== "true") { schedule(); }
})();
