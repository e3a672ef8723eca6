// Consent Relay dashboard: small progressive enhancements. Every page works without them.
(function () {
  "use strict";

  // A checkbox with data-toggles="id" shows the element with that id only while ticked.
  function setUpToggles() {
    document.querySelectorAll("input[type=checkbox][data-toggles]").forEach(function (box) {
      var target = document.getElementById(box.getAttribute("data-toggles"));
      if (!target) return;
      var sync = function () {
        target.hidden = !box.checked;
      };
      box.addEventListener("change", sync);
      sync();
    });
  }

  // "Add a header" buttons clone the last name/value row of their list, emptied.
  function setUpHeaderRows() {
    document.querySelectorAll("button[data-add-row]").forEach(function (button) {
      var name = button.getAttribute("data-add-row");
      var list = document.querySelector('[data-header-rows="' + name + '"]');
      if (!list) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var rows = list.querySelectorAll(".header-row");
        var last = rows[rows.length - 1];
        if (!last) return;
        var copy = last.cloneNode(true);
        var number = rows.length + 1;
        copy.querySelectorAll("input").forEach(function (input) {
          input.value = "";
        });
        copy.querySelectorAll(".visually-hidden").forEach(function (span) {
          span.textContent = span.textContent.replace(/\d+$/, String(number));
        });
        list.appendChild(copy);
        var first = copy.querySelector("input");
        if (first) first.focus();
      });
    });
  }

  // Forms with data-confirm ask first; every form disables its buttons once sent, so a
  // double click does not send it twice.
  function setUpForms() {
    document.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        var question = form.getAttribute("data-confirm");
        if (question && !window.confirm(question)) {
          event.preventDefault();
          return;
        }
        window.setTimeout(function () {
          form.querySelectorAll("button[type=submit]").forEach(function (b) {
            b.disabled = true;
          });
          form.setAttribute("aria-busy", "true");
        }, 0);
      });
    });
    // Coming back with the browser's back button shows the page as it was left.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      document.querySelectorAll("form[aria-busy]").forEach(function (form) {
        form.removeAttribute("aria-busy");
        form.querySelectorAll("button[type=submit]").forEach(function (b) {
          b.disabled = false;
        });
      });
    });
  }

  // data-copy="id" copies the value of that input to the clipboard.
  function setUpCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-copy"));
      if (!input || !navigator.clipboard) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(input.value).then(
          function () {
            button.textContent = "Copied";
          },
          function () {
            input.select();
          }
        );
      });
    });
  }

  // A pending delivery's page reloads itself until the delivery settles.
  function setUpRefresh() {
    var meta = document.querySelector('meta[name="consent-relay-refresh"]');
    if (!meta) return;
    var seconds = parseFloat(meta.getAttribute("content"));
    if (!(seconds > 0)) return;
    window.setTimeout(function () {
      if (document.visibilityState === "hidden") {
        document.addEventListener("visibilitychange", function () {
          window.location.reload();
        }, { once: true });
      } else {
        window.location.reload();
      }
    }, seconds * 1000);
  }

  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpToggles();
    setUpHeaderRows();
    setUpForms();
    setUpCopy();
    setUpRefresh();
    focusErrors();
  });
})();
