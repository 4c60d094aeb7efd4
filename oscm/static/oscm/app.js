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
})();
