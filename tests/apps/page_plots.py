"""What the lab's page tests read off a page: its plots, PNG images and interactive charts alike, in page order.

Imported by the page tests as ``from page_plots import ...`` (``conftest.py`` puts this folder on the path).
"""

import hashlib
import json

from streamlit.testing.v1 import AppTest


def plots(at: AppTest) -> list:
    """The page's images and interactive charts, in page order."""
    found: list = []

    def walk(node) -> None:
        if getattr(node, "type", None) in ("image", "vega_lite_chart"):
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def _chart_tables(node) -> list:
    """A chart's data as pyarrow tables (Streamlit ships a chart's data apart from its spec)."""
    import pyarrow as pa

    blobs = [node.proto.data.data] + [d.data.data for d in node.proto.datasets]
    return [pa.ipc.open_stream(b).read_all() for b in blobs if b]


def image_urls(at: AppTest) -> list[str]:
    """One id per plot on the page, in page order: a PNG's media URL (a hash of the image) or a
    hash of an interactive chart's spec and data; either changes with the plot."""
    ids = []
    for node in plots(at):
        if node.type == "image":
            ids.append(node.proto.imgs[0].url)
        else:
            digest = hashlib.sha256(node.proto.spec.encode())
            for blob in [node.proto.data.data] + [d.data.data for d in node.proto.datasets]:
                digest.update(blob)
            ids.append("chart:" + digest.hexdigest())
    return ids


def chart_truth(at: AppTest, index: int) -> int:
    """How many cells or bars the page's ``index``-th plot (an interactive chart) outlines as truth."""
    rows = set()
    for table in _chart_tables(plots(at)[index]):
        if "truth" in table.column_names:
            for row in table.to_pylist():
                if row["truth"]:
                    rows.add(json.dumps(row, sort_keys=True, default=str))
    return len(rows)
