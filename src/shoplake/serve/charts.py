"""Plotly figures for the dashboard, built in Python and rendered in the page by plotly.js.

Every figure is built from plain lists (no NumPy arrays), so its JSON holds plain arrays that the
browser tests can inspect. A function returns None when it has no data; the page then shows why in place
of the chart. Axes and labels follow `shoplake.serve.formats`: money carries its currency, rates are %,
counts have separators, and a date axis never shows ticks finer than a day.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from shoplake.serve import formats
from shoplake.serve.formats import Kind

_LAYOUT = dict(margin=dict(l=60, r=20, t=30, b=40), height=340, legend=dict(orientation="h", y=-0.2),
               font=dict(size=12), separators=".,")
_TEMPLATE = "plotly_white"
_BAND = "rgba(31, 119, 180, 0.18)"


@functools.cache
def _template_json() -> dict:
    return pio.templates[_TEMPLATE].to_plotly_json()


def to_json(figure: go.Figure | None) -> str | None:
    """The figure as JSON for `Plotly.newPlot`, or None.

    The template is added here, as plain JSON made once: setting it on each figure made plotly validate
    and deep-copy the whole template per chart (most of a dashboard page's time).
    """
    if figure is None:
        return None
    data = figure.to_plotly_json()
    data["layout"] = {**data.get("layout", {}), "template": _template_json()}
    return pio.json.to_json_plotly(data)


def _figure(traces: Sequence[Any], **layout: Any) -> go.Figure:
    figure = go.Figure(data=list(traces))
    figure.update_layout(**{**_LAYOUT, **layout})
    return figure


def value_axis(kind: Kind, currency: str | None = None, title: str = "") -> dict:
    """Tick format of a value axis: % for rates, the currency's symbol (or its name) for money."""
    if kind == "rate":
        return dict(title=title, tickformat=".1%" if not title else ".1%", rangemode="tozero")
    if kind == "money":
        symbol = formats.SYMBOLS.get(currency or "")
        unit = "" if symbol else f" ({formats.currency_label(currency)})"
        return dict(title=f"{title}{unit}", tickprefix=symbol or "", tickformat=",.0f")
    if kind == "seconds":
        return dict(title=title or "seconds", tickformat=",.0f")
    return dict(title=title, tickformat=",~r")


def hover(kind: Kind, currency: str | None = None, axis: str = "y") -> str:
    """A d3 format of one value for hover text."""
    if kind == "rate":
        return f"%{{{axis}:.2%}}"
    if kind == "money":
        symbol = formats.SYMBOLS.get(currency or "")
        return f"{symbol}%{{{axis}:,.2f}}" if symbol else f"%{{{axis}:,.2f}} {formats.currency_label(currency)}"
    return f"%{{{axis}:,}}"


def category_axis(xs: Sequence[Any]) -> dict:
    """An x axis for the values of `xs`: dates by day (one tick per date when there are few of them)."""
    if xs and all(isinstance(x, date) for x in xs):
        distinct = sorted(set(xs))
        axis: dict[str, Any] = dict(type="date", tickformat="%Y-%m-%d")
        if len(distinct) <= 8:
            # Plotly fills a short range with sub-day ticks (a one-day range showed milliseconds).
            axis |= dict(tickvals=[d.isoformat() for d in distinct], ticktext=[d.isoformat() for d in distinct])
        return axis
    return dict(type="category")


def lines(rows: list[dict], x: str, series: dict[str, str], *, kind: Kind = "count", currency: str | None = None,
          y_title: str = "", band: tuple[str, str] | None = None) -> go.Figure | None:
    """One line per column in `series` (column -> legend label) over `x`; `band` (low, high columns) shades an
    interval around the first series."""
    if not rows:
        return None
    xs = [r[x] for r in rows]
    traces = []
    if band is not None:
        low, high = band
        traces += [go.Scatter(x=xs, y=[r[high] for r in rows], mode="lines", line=dict(width=0), showlegend=False,
                              hoverinfo="skip", name="95% high"),
                   go.Scatter(x=xs, y=[r[low] for r in rows], mode="lines", line=dict(width=0), fill="tonexty",
                              fillcolor=_BAND, name="Wilson 95% interval", hoverinfo="skip")]
    traces += [go.Scatter(x=xs, y=[r[col] for r in rows], mode="lines+markers", name=label,
                          hovertemplate=f"{label}: {hover(kind, currency)}<extra>%{{x}}</extra>")
               for col, label in series.items()]
    return _figure(traces, xaxis=category_axis(xs), yaxis=value_axis(kind, currency, y_title))


def bars(rows: list[dict], label: str, value: str, *, kind: Kind = "count", currency: str | None = None,
         horizontal: bool = False, name: str = "", error: tuple[str, str] | None = None,
         title: str = "") -> go.Figure | None:
    """A bar per row, each labelled with its value; `error` (low, high columns) draws an interval."""
    if not rows:
        return None
    labels = [r[label] if isinstance(r[label], date) else str(r[label]) for r in rows]
    values = [r[value] for r in rows]
    texts = [formats.shown(v, kind, currency) for v in values]
    extra: dict[str, Any] = {}
    if error is not None:
        low, high = error
        bar = dict(type="data", symmetric=False, array=[(r[high] or 0) - (r[value] or 0) for r in rows],
                   arrayminus=[(r[value] or 0) - (r[low] or 0) for r in rows], color="#444")
        extra = {"error_x" if horizontal else "error_y": bar}
    axis = value_axis(kind, currency, title)
    if horizontal:
        trace = go.Bar(y=labels, x=values, orientation="h", name=name, text=texts, textposition="auto",
                       hovertemplate=f"%{{y}}: {hover(kind, currency, 'x')}<extra></extra>", **extra)
        height = max(340, 26 * len(rows) + 80)
        return _figure([trace], xaxis=axis, yaxis=dict(autorange="reversed", type="category", automargin=True),
                       height=height, showlegend=False)
    trace = go.Bar(x=labels, y=values, name=name, text=texts, textposition="auto",
                   hovertemplate=f"%{{x}}: {hover(kind, currency)}<extra></extra>", **extra)
    return _figure([trace], xaxis=category_axis(labels), yaxis=axis, showlegend=False)


def grouped_bars(rows: list[dict], label: str, series: dict[str, str], *, kind: Kind = "number") -> go.Figure | None:
    """Bars per row, one colour per column in `series`."""
    if not rows:
        return None
    labels = [str(r[label]) for r in rows]
    traces = [go.Bar(x=labels, y=[r[col] for r in rows], name=name,
                     hovertemplate=f"{name}: {hover(kind)}<extra>%{{x}}</extra>") for col, name in series.items()]
    return _figure(traces, barmode="group", xaxis=dict(type="category"), yaxis=value_axis(kind))


def pie(rows: list[dict], label: str, value: str) -> go.Figure | None:
    if not rows:
        return None
    trace = go.Pie(labels=[str(r[label]) for r in rows], values=[r[value] for r in rows], hole=0.4, sort=False,
                   texttemplate="%{percent:.1%}", hovertemplate="%{label}: %{value:,} (%{percent:.1%})<extra></extra>")
    return _figure([trace])


def heatmap(rows: list[dict], x: str, y: str, z: str, *, kind: Kind = "count", currency: str | None = None,
            x_title: str = "", y_title: str = "", top_first: bool = True,
            complete: str | None = None) -> go.Figure | None:
    """A grid of `z` over the values of `x` and `y`, each cell labelled (missing cells are empty); the first
    `y` value at the top (`top_first`) or at the bottom; a cell whose `complete` column is false is marked *."""
    if not rows:
        return None
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    cells = {(r[x], r[y]): r[z] for r in rows}
    grid = [[cells.get((a, b)) for a in xs] for b in ys]
    partial = {(r[x], r[y]) for r in rows if complete and r[complete] is False}
    labels = [[formats.shown(cells.get((a, b)), kind, currency) + (" *" if (a, b) in partial else "") for a in xs]
              for b in ys]
    trace = go.Heatmap(x=[formats.shown(v) for v in xs], y=[formats.shown(v) for v in ys], z=grid, text=labels,
                       texttemplate="%{text}", colorscale="Blues", hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
                       colorbar=dict(tickformat=".0%" if kind == "rate" else ",~r"))
    height = max(340, 22 * len(ys) + 120)
    return _figure([trace], height=height, xaxis=dict(title=x_title or x, type="category"),
                   yaxis=dict(title=y_title or y, type="category", autorange="reversed" if top_first else True))


def histogram_bins(rows: list[dict], low: str, high: str, count: str, *, log: bool = True) -> go.Figure | None:
    """Counts per bin [low, high) of a probability, one bar per bin labelled by its range; a log count axis
    keeps the small bins visible."""
    if not rows:
        return None
    labels = [f"{formats.shown(r[low], 'rate')}–{formats.shown(r[high], 'rate')}" for r in rows]
    trace = go.Bar(x=labels, y=[r[count] for r in rows], text=[f"{r[count]:,}" for r in rows], textposition="outside",
                   hovertemplate="%{x}: %{y:,} pairs<extra></extra>")
    return _figure([trace], bargap=0.05, showlegend=False,
                   xaxis=dict(type="category", title="predicted probability (bins of a fifth of a decade)"),
                   yaxis=dict(title="pairs (log scale)" if log else "pairs", type="log" if log else "linear"))


def lineage(edges: list[tuple[str, str]], layers: dict[str, str]) -> go.Figure | None:
    """Tables as points in one column per layer, inputs joined to outputs by lines."""
    if not layers:
        return None
    order = ["bronze", "quarantine", "silver", "gold", "ops"]
    columns: dict[str, list[str]] = {}
    for name, layer in sorted(layers.items()):
        columns.setdefault(layer, []).append(name)
    position: dict[str, tuple[float, float]] = {}
    for layer, names in columns.items():
        x = order.index(layer) if layer in order else len(order)
        for i, name in enumerate(names):
            position[name] = (x, -i)
    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    for source, target in edges:
        (x0, y0), (x1, y1) = position[source], position[target]
        edge_x += [x0, x1, None]
        edge_y += [y0, y1, None]
    names = list(position)
    traces = [
        go.Scatter(x=edge_x, y=edge_y, mode="lines", line=dict(color="#b0b7c3", width=1), hoverinfo="skip",
                   name="reads"),
        go.Scatter(x=[position[n][0] for n in names], y=[position[n][1] for n in names], mode="markers+text",
                   text=names, textposition="middle right", marker=dict(size=10), hovertext=names,
                   hoverinfo="text", name="tables"),
    ]
    height = max(340, 34 * max(len(v) for v in columns.values()))
    return _figure(traces, height=height, showlegend=False,
                   xaxis=dict(tickvals=list(range(len(order))), ticktext=order, range=[-0.3, len(order) + 0.3]),
                   yaxis=dict(visible=False))
