// Live updates: the server pushes re-rendered fragments over Server-Sent Events; no reloads.
(function () {
  "use strict";
  if (!window.EventSource) {
    return;
  }
  var source = new EventSource("/events" + window.location.search);
  source.addEventListener("board", function (event) {
    var message = JSON.parse(event.data);
    Object.keys(message.html).forEach(function (id) {
      var element = document.getElementById(id);
      if (element) {
        element.innerHTML = message.html[id];
      }
    });
    document.body.setAttribute("data-as-of", message.as_of);
  });
  source.addEventListener("error", function () {
    var status = document.getElementById("status");
    if (status && source.readyState !== EventSource.OPEN) {
      status.innerHTML =
        '<p class="nhsuk-body-s" data-status="reconnecting"><strong>Live updates interrupted:</strong> reconnecting.</p>';
    }
  });
})();
