// Enroll Sync: the little JavaScript htmx and Bootstrap do not cover.
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

// The design system (Bootstrap 5.3): toasts that expire, one confirmation dialog for every
// "are you sure?", the Sync to SIS dialog, tooltips, details rows, the selection count,
// permission presets, and charts (Chart.js) drawn from the tables that hold their numbers.
(function () {
  var bs = window.bootstrap;

  // --- toasts: successes and notes hide after their delay, problems stay until closed
  function initToasts(root) {
    if (!bs) return;
    (root || document).querySelectorAll(".toast:not([data-es-init])").forEach(function (el) {
      el.setAttribute("data-es-init", "1");
      el.addEventListener("hidden.bs.toast", function () { el.remove(); });
      bs.Toast.getOrCreateInstance(el).show();
    });
  }

  // --- tooltips (a Failed status shows its reason on hover)
  function initTooltips(root) {
    if (!bs) return;
    (root || document).querySelectorAll('[data-bs-toggle="tooltip"]').forEach(function (el) {
      bs.Tooltip.getOrCreateInstance(el);
    });
  }
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!bs || !target) return;
    target.querySelectorAll('[data-bs-toggle="tooltip"]').forEach(function (el) {
      var tip = bs.Tooltip.getInstance(el);
      if (tip) tip.dispose();
    });
  });

  // --- the confirmation dialog: <form data-confirm="question" data-confirm-title=".."
  //     data-confirm-ok="Unlink" data-confirm-variant="danger|primary" data-confirm-keep="..">
  var pending = null;
  function confirmModal() {
    var el = document.getElementById("confirm-modal");
    return el && bs ? { el: el, modal: bs.Modal.getOrCreateInstance(el) } : null;
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-confirm]")) return;
    if (form.getAttribute("data-confirmed") === "1") { form.removeAttribute("data-confirmed"); return; }
    var m = confirmModal();
    if (!m) return;  // no dialog on this page: the form goes as it is
    event.preventDefault();
    event.stopImmediatePropagation();
    pending = { form: form, submitter: event.submitter || null };
    m.el.querySelector("#confirm-modal-title").textContent = form.getAttribute("data-confirm-title") || "Are you sure?";
    m.el.querySelector("#confirm-modal-body").textContent = form.getAttribute("data-confirm");
    var ok = m.el.querySelector("#confirm-modal-ok");
    ok.textContent = form.getAttribute("data-confirm-ok") || "OK";
    ok.className = "btn btn-" + (form.getAttribute("data-confirm-variant") || "danger");
    m.el.querySelector("#confirm-modal-cancel").textContent = form.getAttribute("data-confirm-keep") || "Cancel";
    m.modal.show();
  }, true);
  document.addEventListener("click", function (event) {
    if (!event.target.closest || !event.target.closest("#confirm-modal-ok") || !pending) return;
    var p = pending;
    pending = null;
    confirmModal().modal.hide();
    p.form.setAttribute("data-confirmed", "1");
    if (p.submitter && p.submitter.form === p.form) p.form.requestSubmit(p.submitter);
    else p.form.requestSubmit();
  });
  document.addEventListener("shown.bs.modal", function (event) {
    if (event.target.id === "confirm-modal") event.target.querySelector("#confirm-modal-cancel").focus();
  });
  document.addEventListener("hidden.bs.modal", function (event) {
    if (event.target.id === "confirm-modal") pending = null;
  });

  // --- a dialog whose content arrives by HTMX (Sync to SIS): open it once the answer is in
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail.target;
    var el = target && target.id ? document.getElementById(target.id) : null;
    var modal = el && el.closest ? el.closest(".modal[data-open-on-swap]") : null;
    if (modal && bs) bs.Modal.getOrCreateInstance(modal).show();
  });

  // --- a details row: <button data-toggle-row="#row-id" aria-expanded="false">
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-toggle-row]") : null;
    if (!button) return;
    var row = document.querySelector(button.getAttribute("data-toggle-row"));
    if (!row) return;
    row.hidden = !row.hidden;
    button.setAttribute("aria-expanded", row.hidden ? "false" : "true");
  });

  // --- "N selected" beside Bulk Actions: <span data-selected-count="registration_ids">
  function updateCounts() {
    document.querySelectorAll("[data-selected-count]").forEach(function (out) {
      var name = out.getAttribute("data-selected-count");
      var all = document.querySelector('input[name="all_matching"]:checked');
      var n = document.querySelectorAll('input[type=checkbox][name="' + name + '"]:checked').length;
      var noun = name === "school_ids" ? "school" : "registration";
      if (all && name === "registration_ids") out.textContent = "All matching this filter selected";
      else out.textContent = n ? n + " " + noun + (n === 1 ? "" : "s") + " selected" : "No " + noun + " selected";
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("input[type=checkbox]")) updateCounts();
  });

  // --- permission presets: the preset picker ticks its boxes; ticking a box names the
  //     preset the ticks equal (or Custom)
  function presetOf(select) {
    var fields = select.closest("[data-permission-fields]");
    var ticked = Array.prototype.filter.call(fields.querySelectorAll('input[name="permissions"]'), function (b) {
      return b.checked;
    }).map(function (b) { return b.value; }).sort().join("|");
    var match = "";
    Array.prototype.forEach.call(select.options, function (o) {
      var perms = o.getAttribute("data-permissions");
      if (perms && JSON.parse(perms).slice().sort().join("|") === ticked) match = o.value;
    });
    return match;
  }
  document.addEventListener("change", function (event) {
    var el = event.target;
    var fields = el.closest ? el.closest("[data-permission-fields]") : null;
    if (!fields) return;
    var select = fields.querySelector("[data-preset-select]");
    if (el === select) {
      var option = select.options[select.selectedIndex];
      var perms = option && option.getAttribute("data-permissions");
      if (!perms) return;
      var wanted = JSON.parse(perms);
      fields.querySelectorAll('input[name="permissions"]').forEach(function (box) {
        box.checked = wanted.indexOf(box.value) !== -1;
      });
    } else if (el.name === "permissions" && select) {
      select.value = presetOf(select);
    }
  });

  // --- charts: <canvas data-chart="stacked-bar|line" data-chart-source="#table">; the
  //     numbers come from the table, so what is drawn is what the table says
  function stackedBar(table) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var heads = Array.prototype.slice.call(table.querySelectorAll("thead th[data-series]"));
    return {
      labels: rows.map(function (r) { return r.cells[0].textContent.trim(); }),
      datasets: heads.map(function (th) {
        var col = th.cellIndex;
        return { label: th.getAttribute("data-series"), backgroundColor: th.getAttribute("data-color") || undefined,
                 data: rows.map(function (r) { return Number(r.cells[col].getAttribute("data-value") || 0); }) };
      })
    };
  }
  function line(table) {
    // the run starts at 0 s with nothing done yet; each row is a slice of the run (its end, its rate)
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var labels = ["0"].concat(rows.map(function (r) {
      return String(Math.round(Number(r.querySelector("[data-x]").getAttribute("data-x")) * 10) / 10);
    }));
    var data = [0].concat(rows.map(function (r) { return Number(r.querySelector("[data-y]").getAttribute("data-y")); }));
    return {
      labels: labels,
      datasets: [{ label: "Records/s", borderColor: "#0b5ed7", backgroundColor: "rgba(11, 94, 215, .15)", fill: true,
                   tension: 0.25, pointRadius: 2, data: data }]
    };
  }
  function chartConfig(kind, data) {
    var common = { responsive: true, maintainAspectRatio: false, animation: false };
    if (kind === "stacked-bar") {
      return { type: "bar", data: data, options: Object.assign(common, {
        indexAxis: "y",
        scales: { x: { stacked: true, beginAtZero: true, title: { display: true, text: "Registrations" } },
                  y: { stacked: true } },
        plugins: { legend: { position: "bottom" } } }) };
    }
    return { type: "line", data: data, options: Object.assign(common, {
      scales: { x: { title: { display: true, text: "seconds after start" } },
                y: { beginAtZero: true, title: { display: true, text: "records/s" } } },
      plugins: { legend: { display: false } } }) };
  }
  function renderCharts() {
    if (!window.Chart) return;
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var table = document.querySelector(canvas.getAttribute("data-chart-source"));
      if (!table || !table.tBodies.length) return;
      var kind = canvas.getAttribute("data-chart");
      var data = kind === "stacked-bar" ? stackedBar(table) : line(table);
      var chart = window.Chart.getChart(canvas);
      if (chart) {
        chart.data.labels = data.labels;
        data.datasets.forEach(function (d, i) {
          if (chart.data.datasets[i]) chart.data.datasets[i].data = d.data; else chart.data.datasets.push(d);
        });
        chart.update("none");
      } else {
        new window.Chart(canvas, chartConfig(kind, data));
      }
    });
  }

  function init(root) {
    initToasts(root);
    initTooltips(root);
    updateCounts();
    renderCharts();
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSettle", function () { init(document); });
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
