// Enroll Sync: the little JavaScript htmx does not cover.
(function () {
  // "Select all" checkboxes: <input type=checkbox data-select-all="field_name">
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[data-select-all]")) return;
    var name = box.getAttribute("data-select-all");
    var scope = box.closest("form") || document;
    scope.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
      other.checked = box.checked;
      other.dispatchEvent(new Event("change", { bubbles: true }));
    });
  });
})();
