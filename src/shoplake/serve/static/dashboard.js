// Draw every chart of the page from the figure JSON embedded next to it (plotly.js is local), and offer
// each chart's and table's rows as CSV, made in the browser from the data embedded in the page (so the
// exported file can do it offline too).
(function () {
  document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
    var source = document.getElementById(el.dataset.figure);
    if (!source) { return; }
    var figure = JSON.parse(source.textContent);
    Plotly.newPlot(el, figure.data, figure.layout, {responsive: true, displaylogo: false, showSendToCloud: false,
                                                 showEditInChartStudio: false});
  });

  function csvField(value) {
    if (value === null || value === undefined) { return ""; }
    var text = String(value);
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  document.querySelectorAll("button.csv[data-data]").forEach(function (button) {
    button.addEventListener("click", function () {
      var data = JSON.parse(document.getElementById(button.dataset.data).textContent);
      var lines = [data.columns.map(csvField).join(",")];
      data.rows.forEach(function (row) { lines.push(row.map(csvField).join(",")); });
      var blob = new Blob([lines.join("\n") + "\n"], {type: "text/csv"});
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = button.dataset.name + ".csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
      // Revoke late: a busy browser may start reading the blob seconds after the click, and a revoked URL
      // makes the download vanish without an error.
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 120000);
    });
  });
})();
