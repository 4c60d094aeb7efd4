// Keyboard shortcuts of list pages: j and k move the focus down and up the
// rows' main links, which Enter then opens. Everything works without it.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "j" && event.key !== "k") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var links = Array.prototype.slice.call(document.querySelectorAll("a.row-link"));
    if (!links.length) return;
    var index = links.indexOf(document.activeElement);
    index = event.key === "j" ? Math.min(index + 1, links.length - 1) : Math.max(index - 1, 0);
    links.forEach(function (link) { link.closest("tr").classList.remove("current"); });
    links[index].focus();
    links[index].closest("tr").classList.add("current");
    event.preventDefault();
  });
  // "Select all" checkboxes tick every checkbox named by data-select-all.
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute("data-select-all");
    if (!name) return;
    document.querySelectorAll('input[name="' + name + '"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });
  // A POST form sends once: a second submit (a double click, Enter pressed
  // twice) is dropped and the submit buttons are disabled until the next
  // page. The server spots repeats by the form's submission token anyway.
  function submitButtons(form) {
    return Array.prototype.filter.call(form.elements, function (element) {
      return element.type === "submit";
    });
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || form.method !== "post") return;
    if (form.hasAttribute("data-submitting")) {
      event.preventDefault();
      return;
    }
    form.setAttribute("data-submitting", "");
    // A disabled button drops out of the form data, so the buttons are
    // disabled only once the browser has read the clicked one's value.
    window.setTimeout(function () {
      submitButtons(form).forEach(function (button) { button.disabled = true; });
    }, 0);
  });
  // The back button may restore the page from the browser's cache with the
  // buttons still disabled; the user may then send the form again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-submitting]").forEach(function (form) {
      form.removeAttribute("data-submitting");
      submitButtons(form).forEach(function (button) { button.disabled = false; });
    });
  });
})();
