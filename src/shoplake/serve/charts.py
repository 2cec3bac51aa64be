"""Plotly figures for the dashboard, built in Python and rendered in the page by plotly.js.

Every figure is built from plain lists (no NumPy arrays), so its JSON holds plain arrays that the
browser tests can inspect. A function returns None when it has no data; the page then shows the
"no data yet" message in place of the chart.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

_LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=40), height=340, legend=dict(orientation="h", y=-0.2),
               font=dict(size=12))
_TEMPLATE = "plotly_white"


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


def _figure(traces: Sequence[Any], title: str, **layout: Any) -> go.Figure:
    figure = go.Figure(data=list(traces))
    figure.update_layout(title=dict(text=title, x=0), **{**_LAYOUT, **layout})
    return figure


def lines(rows: list[dict], x: str, series: dict[str, str], title: str, *, y_title: str = "",
          percent: bool = False) -> go.Figure | None:
    """One line per column in `series` (column -> legend label) over `x`."""
    if not rows:
        return None
    xs = [r[x] for r in rows]
    traces = [go.Scatter(x=xs, y=[r[col] for r in rows], mode="lines+markers", name=label)
              for col, label in series.items()]
    return _figure(traces, title, yaxis=dict(title=y_title, tickformat=".1%" if percent else None))


def grouped_lines(rows: list[dict], x: str, group: str, y: str, title: str, *, y_title: str = "") -> go.Figure | None:
    """One line per value of `group` (rows sorted by x)."""
    if not rows:
        return None
    groups: dict[str, tuple[list, list]] = {}
    for row in rows:
        xs, ys = groups.setdefault(str(row[group]), ([], []))
        xs.append(row[x])
        ys.append(row[y])
    traces = [go.Scatter(x=xs, y=ys, mode="lines", name=name) for name, (xs, ys) in groups.items()]
    return _figure(traces, title, yaxis=dict(title=y_title))


def bars(rows: list[dict], label: str, value: str, title: str, *, horizontal: bool = False,
         percent: bool = False, name: str = "") -> go.Figure | None:
    """A bar per row."""
    if not rows:
        return None
    labels = [str(r[label]) for r in rows]
    values = [r[value] for r in rows]
    trace = (go.Bar(y=labels, x=values, orientation="h", name=name) if horizontal
             else go.Bar(x=labels, y=values, name=name))
    axis = dict(tickformat=".1%" if percent else None)
    layout = dict(xaxis=axis, yaxis=dict(autorange="reversed")) if horizontal else dict(yaxis=axis)
    return _figure([trace], title, **layout)


def grouped_bars(rows: list[dict], label: str, series: dict[str, str], title: str) -> go.Figure | None:
    """Bars per row, one colour per column in `series`."""
    if not rows:
        return None
    labels = [str(r[label]) for r in rows]
    traces = [go.Bar(x=labels, y=[r[col] for r in rows], name=name) for col, name in series.items()]
    return _figure(traces, title, barmode="group")


def pie(rows: list[dict], label: str, value: str, title: str) -> go.Figure | None:
    if not rows:
        return None
    trace = go.Pie(labels=[str(r[label]) for r in rows], values=[r[value] for r in rows], hole=0.4, sort=False)
    return _figure([trace], title)


def funnel(stages: list[tuple[str, float]], title: str) -> go.Figure | None:
    if not stages or not any(value for _, value in stages):
        return None
    trace = go.Funnel(y=[s for s, _ in stages], x=[v for _, v in stages], textinfo="value+percent initial")
    return _figure([trace], title)


def heatmap(rows: list[dict], x: str, y: str, z: str, title: str, *, text: str | None = None) -> go.Figure | None:
    """A grid of `z` over the values of `x` and `y` (missing cells are empty)."""
    if not rows:
        return None
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    cells = {(r[x], r[y]): r for r in rows}
    grid = [[cells[(a, b)][z] if (a, b) in cells else None for a in xs] for b in ys]
    labels = ([[str(cells[(a, b)][text]) if (a, b) in cells else "" for a in xs] for b in ys] if text else None)
    trace = go.Heatmap(x=[str(v) for v in xs], y=[str(v) for v in ys], z=grid, text=labels,
                       texttemplate="%{text}" if text else None, colorscale="Blues")
    return _figure([trace], title, xaxis=dict(title=x, type="category"), yaxis=dict(title=y, type="category"))


def histogram(values: list[float], title: str, *, x_title: str = "") -> go.Figure | None:
    if not values:
        return None
    return _figure([go.Histogram(x=values, nbinsx=40)], title, xaxis=dict(title=x_title), bargap=0.05)


def lineage(edges: list[tuple[str, str]], layers: dict[str, str], title: str) -> go.Figure | None:
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
    return _figure(traces, title, height=height, showlegend=False,
                   xaxis=dict(tickvals=list(range(len(order))), ticktext=order, range=[-0.3, len(order) + 0.3]),
                   yaxis=dict(visible=False))
