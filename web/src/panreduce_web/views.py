"""Result views: plots (Plotly figure dicts) from an output file, in compact form.

Every NXdata group of a NeXus/HDF5 output is a figure (the @default one first): a 1-D
signal is a curve (with its ``<signal>_errors`` as error bars and the group's other
same-length columns -- a fit, residuals below it -- as more curves), a 2-D signal an
image, a 3-D signal a stack of slices (one slice per request, chosen by a slider), a
complex signal its amplitude and phase. Curves longer than ``max_points`` are decimated
(min/max per bucket, so peaks stay), images block-averaged to ``max_pixels`` a side;
``full=True`` sends up to the hard limits. The technique picks the axes' scales: I(Q)
log-log (sans, saxs), R(Q) log-y (reflectometry). Text tables (ORSO ``.ort``, CSV) are
curves of their columns.

No file path or location comes from the caller: the file is the job's own output,
fetched through the gateway's Download into a temporary file.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

MAX_GROUPS = 12
MAX_POINTS = 2000
MAX_PIXELS = 256
FULL_POINTS = 200_000
FULL_PIXELS = 2048
MAX_READ = 64 << 20  # bytes one dataset read may take (larger ones are read by slices)

LOG_LOG = {"sans", "saxs"}
LOG_Y = {"reflectometry"}


def _str(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.size == 1:
        return _str(v.reshape(-1)[0])
    return str(v)


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    try:
        return obj.attrs.get(name, default)
    except (OSError, TypeError, KeyError):
        return default


def _finite_list(a: np.ndarray) -> list[float | None]:
    """JSON numbers (NaN and infinities as null: a gap in the plot)."""
    flat = np.asarray(a, dtype=float).reshape(-1)
    return [float(v) if math.isfinite(v) else None for v in flat.tolist()]


def decimate(x: np.ndarray, ys: list[np.ndarray], max_points: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """At most ~``max_points`` points: the min and max of each bucket of the first curve
    (the others at the same indices), so a narrow peak survives."""
    n = len(x)
    if n <= max_points:
        return x, ys
    buckets = max(max_points // 2, 1)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep: list[int] = []
    ref = np.nan_to_num(np.asarray(ys[0], dtype=float), nan=0.0) if ys else np.zeros(n)
    for lo, hi in itertools.pairwise(edges.tolist()):
        if hi <= lo:
            continue
        seg = ref[lo:hi]
        a, b = lo + int(np.argmin(seg)), lo + int(np.argmax(seg))
        keep.extend(sorted({a, b}))
    idx = np.asarray(keep)
    return x[idx], [np.asarray(y)[idx] for y in ys]


def downsample(img: np.ndarray, max_pixels: int) -> np.ndarray:
    """Block means so that neither side exceeds ``max_pixels``."""
    img = np.asarray(img, dtype=float)
    fy = max(1, math.ceil(img.shape[0] / max_pixels))
    fx = max(1, math.ceil(img.shape[1] / max_pixels))
    if fy == 1 and fx == 1:
        return img
    h, w = img.shape[0] // fy * fy, img.shape[1] // fx * fx
    if h == 0 or w == 0:
        return img[::fy, ::fx]
    return np.nanmean(img[:h, :w].reshape(h // fy, fy, w // fx, fx), axis=(1, 3))


def _read(ds: Any, index: Any = ()) -> np.ndarray:
    shape = ds.shape
    itemsize = ds.dtype.itemsize or 8
    if not index and int(np.prod(shape, dtype=np.int64)) * itemsize > MAX_READ:
        raise ValueError(f"{ds.name} is too large to plot whole ({shape})")
    return np.asarray(ds[index] if index != () else ds[()])


def _groups(f: Any) -> list[Any]:
    """The NXdata groups: the @default chain's first, then the others in file order."""
    import h5py

    found: list[Any] = []
    seen: set[str] = set()

    def default_of(group: Any) -> Any:
        for _ in range(4):
            name = _attr(group, "default")
            if name is None:
                return None
            child = group.get(_str(name))
            if not isinstance(child, h5py.Group):
                return None
            if _str(_attr(child, "NX_class", "")) == "NXdata":
                return child
            group = child
        return None

    first = default_of(f)
    if first is not None:
        found.append(first)
        seen.add(first.name)
    stack: list[tuple[Any, int]] = [(f, 0)]
    visited = 0
    while stack and len(found) < MAX_GROUPS and visited < 2000:
        group, depth = stack.pop(0)
        visited += 1
        for key in list(group.keys())[:500]:
            try:
                obj = group.get(key, getlink=False)
            except (KeyError, OSError):
                continue
            if not isinstance(obj, h5py.Group):
                continue
            if _str(_attr(obj, "NX_class", "")) == "NXdata" and obj.name not in seen and _attr(obj, "signal"):
                found.append(obj)
                seen.add(obj.name)
            elif depth < 4:
                stack.append((obj, depth + 1))
    return found[:MAX_GROUPS]


def _axes(group: Any, ndim: int) -> list[str | None]:
    raw = _attr(group, "axes")
    if raw is None:
        return [None] * ndim
    names = [_str(a) for a in (raw if isinstance(raw, np.ndarray | list | tuple) else [raw])]
    names = [None if a == "." else a for a in names]
    return (names + [None] * ndim)[:ndim]


def _label(group: Any, name: str) -> str:
    ds = group.get(name)
    if ds is None:
        return name
    long = _attr(ds, "long_name")
    units = _attr(ds, "units")
    text = _str(long) if long is not None else name
    unit = _str(units) if units is not None else ""
    return f"{text} ({unit})" if unit and f"({unit})" not in text else text


def figure_of_group(
    group: Any, technique: str, *, full: bool = False, slice_index: int | None = None
) -> dict[str, Any]:
    """One figure dict: {"title", "kind", "data", "layout", ...}."""
    signal = _str(_attr(group, "signal"))
    ds = group.get(signal)
    if ds is None or not hasattr(ds, "shape"):
        raise ValueError(f"{group.name}: no signal dataset {signal!r}")
    title = _str(_attr(group, "title", group.name))
    ndim = len(ds.shape)
    axes = _axes(group, ndim)
    if ndim == 1:
        return _curve(group, ds, signal, axes[0], technique, title, full)
    if ndim in (2, 3) or np.iscomplexobj(np.empty(0, dtype=ds.dtype)):
        return _image(group, ds, signal, axes, title, full, slice_index)
    # higher dimensions (4D-STEM): the virtual image, summed over the last two axes
    data = _read(ds).astype(float)
    while data.ndim > 2:
        data = data.sum(axis=-1)
    img = downsample(data, FULL_PIXELS if full else MAX_PIXELS)
    return {
        "title": title + " (summed over the detector)",
        "kind": "image",
        "group": group.name,
        "data": [{"type": "heatmap", "z": [_finite_list(r) for r in img], "colorscale": "Viridis"}],
        "layout": {"title": {"text": title}},
    }


def _curve(
    group: Any, ds: Any, signal: str, axis: str | None, technique: str, title: str, full: bool
) -> dict[str, Any]:
    y = _read(ds).astype(float)
    n = len(y)
    x = np.arange(n, dtype=float)
    if axis and axis in group:
        xa = _read(group[axis]).astype(float).reshape(-1)
        if len(xa) == n + 1:  # bin edges
            xa = 0.5 * (xa[1:] + xa[:-1])
        if len(xa) == n:
            x = xa
    err_name = f"{signal}_errors" if f"{signal}_errors" in group else ("errors" if "errors" in group else None)
    extra = []
    for key in list(group.keys())[:64]:
        obj = group.get(key)
        if key in (signal, axis, err_name) or not hasattr(obj, "shape") or obj.shape != (n,):
            continue
        if not np.issubdtype(obj.dtype, np.number) or key.endswith("_errors"):
            continue
        extra.append(key)
    columns = (
        [y]
        + ([_read(group[err_name]).astype(float).reshape(-1)] if err_name else [])
        + [_read(group[k]).astype(float) for k in extra]
    )
    limit = FULL_POINTS if full else MAX_POINTS
    x, columns = decimate(x, columns, limit)
    y = columns[0]
    err = columns[1] if err_name else None
    rest = dict(zip(extra, columns[2 if err_name else 1 :], strict=True))
    log_x = technique in LOG_LOG
    log_y = technique in LOG_LOG or technique in LOG_Y
    main: dict[str, Any] = {
        "type": "scatter",
        "mode": "markers" if err is not None else "lines",
        "name": signal,
        "x": _finite_list(x),
        "y": _finite_list(y),
    }
    if err is not None:
        main["error_y"] = {"type": "data", "array": _finite_list(err), "visible": True}
    traces = [main]
    residual_keys = [k for k in rest if "resid" in k.lower()]
    for key, values in rest.items():
        trace = {"type": "scatter", "mode": "lines", "name": key, "x": _finite_list(x), "y": _finite_list(values)}
        if key in residual_keys:
            trace.update(mode="markers", yaxis="y2")
        traces.append(trace)
    layout: dict[str, Any] = {
        "title": {"text": title},
        "xaxis": {"title": {"text": _label(group, axis) if axis else "index"}, "type": "log" if log_x else "linear"},
        "yaxis": {
            "title": {"text": _label(group, signal)},
            "type": "log" if log_y else "linear",
            "domain": [0.3, 1.0] if residual_keys else [0.0, 1.0],
        },
    }
    if residual_keys:
        layout["yaxis2"] = {"title": {"text": "residual"}, "domain": [0.0, 0.22], "anchor": "x"}
        layout["xaxis"]["anchor"] = "y2"  # the shared x axis below the residuals
    return {
        "title": title,
        "kind": "curve",
        "group": group.name,
        "points": len(x),
        "total": n,
        "decimated": len(x) < n,
        "data": traces,
        "layout": layout,
    }


def _image(
    group: Any, ds: Any, signal: str, axes: list[str | None], title: str, full: bool, slice_index: int | None
) -> dict[str, Any]:
    limit = FULL_PIXELS if full else MAX_PIXELS
    out: dict[str, Any] = {"title": title, "kind": "image", "group": group.name, "shape": list(ds.shape)}
    if len(ds.shape) == 3:
        depth = ds.shape[0]
        k = depth // 2 if slice_index is None else min(max(int(slice_index), 0), depth - 1)
        raw = _read(ds, (k,))
        out.update(kind="stack", slices=depth, slice=k)
    else:
        raw = _read(ds)
    if np.iscomplexobj(raw):
        parts = [("amplitude", np.abs(raw), "Viridis"), ("phase", np.angle(raw), "Twilight")]
        out["kind"] = "complex" if out["kind"] == "image" else out["kind"]
    else:
        parts = [(signal, raw.astype(float), "Viridis")]
    data = []
    for i, (name, values, scale) in enumerate(parts):
        img = downsample(values, limit)
        trace: dict[str, Any] = {
            "type": "heatmap",
            "name": name,
            "z": [_finite_list(r) for r in img],
            "colorscale": scale,
            "showscale": i == 0,
        }
        if len(parts) > 1:
            trace.update(xaxis=f"x{i + 1}" if i else "x", yaxis=f"y{i + 1}" if i else "y")
        data.append(trace)
    out["data"] = data
    layout: dict[str, Any] = {"title": {"text": title}, "yaxis": {"scaleanchor": "x"}}
    if len(parts) > 1:
        layout.update(
            grid={"rows": 1, "columns": 2, "pattern": "independent"},
            annotations=[
                {"text": p[0], "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.2 + 0.6 * i, "y": 1.05}
                for i, p in enumerate(parts)
            ],
        )
    out["layout"] = layout
    return out


def text_figure(path: Path, title: str, technique: str, *, full: bool = False) -> dict[str, Any]:
    """A table of numbers (ORSO .ort, CSV, .dat): its first column against the others."""
    rows: list[list[float]] = []
    names: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh):
            if i > 2_000_000:
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                if "columns" in text.lower() or text.lstrip("# ").startswith("- {name:"):
                    pass
                continue
            try:
                rows.append([float(v) for v in text.replace(",", " ").split()])
            except ValueError:
                if not rows:
                    names = text.replace(",", " ").split()
                continue
    width = min((len(r) for r in rows), default=0)
    if width < 2:
        raise ValueError("no numeric table")
    table = np.asarray([r[:width] for r in rows])
    x = table[:, 0]
    ys = [table[:, j] for j in range(1, width)]
    x, ys = decimate(x, ys, FULL_POINTS if full else MAX_POINTS)
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": "markers",
        "name": names[1] if len(names) > 1 else "y",
        "x": _finite_list(x),
        "y": _finite_list(ys[0]),
    }
    if len(ys) > 1:
        trace["error_y"] = {"type": "data", "array": _finite_list(ys[1]), "visible": True}
    log_x = technique in LOG_LOG
    log_y = technique in LOG_LOG or technique in LOG_Y
    return {
        "title": title,
        "kind": "curve",
        "points": len(x),
        "total": len(table),
        "data": [trace],
        "layout": {
            "title": {"text": title},
            "xaxis": {"type": "log" if log_x else "linear", "title": {"text": names[0] if names else "x"}},
            "yaxis": {"type": "log" if log_y else "linear"},
        },
    }


def figures(
    path: Path, technique: str, *, full: bool = False, group: str | None = None, slice_index: int | None = None
) -> list[dict[str, Any]]:
    """Every figure of an output file (or of its NXdata ``group`` only)."""
    import h5py

    if not h5py.is_hdf5(str(path)):
        try:
            return [text_figure(path, path.name, technique, full=full)]
        except (ValueError, OSError):
            return []
    from panreduce import locations

    out = []
    with h5py.File(path, "r") as f:
        locations.check_hdf5_references(f, path, [path.parent])  # an output may not reach other files
        for g in _groups(f):
            if group is not None and g.name != group:
                continue
            try:
                out.append(figure_of_group(g, technique, full=full, slice_index=slice_index))
            except (ValueError, OSError, TypeError, KeyError) as exc:
                out.append({"title": g.name, "kind": "error", "error": str(exc)[:200], "data": [], "layout": {}})
    return out
