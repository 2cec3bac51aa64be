// Draw every chart of the page from the figure JSON embedded next to it (plotly.js is local).
(function () {
  document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
    var source = document.getElementById(el.dataset.figure);
    if (!source) { return; }
    var figure = JSON.parse(source.textContent);
    Plotly.newPlot(el, figure.data, figure.layout, {responsive: true, displaylogo: false, showSendToCloud: false,
                                                 showEditInChartStudio: false});
  });
})();
