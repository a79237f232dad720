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
  // Unticking one row un-ticks the "select all" boxes that cover it, so "select all N
  // matching" never stays on while the admin has left a registration out.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[type=checkbox][name]") || box.checked) return;
    var scope = box.closest("form") || document;
    scope.querySelectorAll('input[data-select-all="' + box.name + '"]').forEach(function (all) {
      all.checked = false;
    });
  });
})();

// Sync Service: the Field Mapping editor and the Send Record dialog.
(function () {
  // Validation messages (400/409/422) and SIS failures (502) are meant to be shown:
  // swap them like a success; other errors stay out of the page.
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "(400|409|422|502)", swap: true },
      { code: "[45]..", swap: false, error: true },
      { code: "...", swap: false }
    ];
  }

  // Search over mapping rows: <input data-filter-rows="#container"> hides tbody[data-search]
  // rows that do not contain every word and opens the sections holding matches.
  function filterRows(input) {
    var scope = document.querySelector(input.getAttribute("data-filter-rows")) || document;
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    scope.querySelectorAll("details").forEach(function (section) {
      var any = false;
      section.querySelectorAll("tbody[data-search]").forEach(function (row) {
        var text = row.getAttribute("data-search") || "";
        var match = words.every(function (w) { return text.indexOf(w) !== -1; });
        row.hidden = !match;
        if (match) { any = true; shown++; }
      });
      section.hidden = words.length > 0 && !any;
      if (words.length && any) section.open = true;
    });
    var empty = document.getElementById("mapping-search-empty");
    if (empty) empty.hidden = !(words.length && shown === 0);
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("input[data-filter-rows]")) filterRows(event.target);
  });

  // Keep the sections the admin opened (and the search) when the whole editor is swapped.
  var openSections = null, search = "";
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "field-mapping") return;
    openSections = Array.prototype.map.call(target.querySelectorAll("details[open]"), function (d) { return d.id; });
    var box = target.querySelector("input[data-filter-rows]");
    search = box ? box.value : "";
  });
  document.addEventListener("htmx:afterSettle", function () {
    var form = document.getElementById("field-mapping");
    if (!form || openSections === null) return;
    openSections.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    openSections = null;
    var box = form.querySelector("input[data-filter-rows]");
    if (box && search) { box.value = search; filterRows(box); }
  });

  // Cancel / Close in the Send Record dialog: nothing is sent, the dialog goes away.
  document.addEventListener("click", function (event) {
    var el = event.target.closest ? event.target.closest("[data-close-dialog]") : null;
    if (!el) return;
    var dialog = el.closest("dialog");
    if (!dialog || !document.getElementById("field-mapping")) return;  // a full page: follow the link
    event.preventDefault();
    var placeholder = document.createElement("div");
    placeholder.id = dialog.id;
    dialog.replaceWith(placeholder);
  });
})();

// Errors answered to an HTMX request (403, 404, an expired form, a server error) come
// back as a message for the page's flash area (HX-Retarget: #flashes): show it.
document.addEventListener("htmx:beforeSwap", function (event) {
  var xhr = event.detail.xhr;
  if (xhr && xhr.getResponseHeader("X-Enroll-Sync-Error")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
