"""The GPU comparison under SLOs (`trtq compare -o OUT.html`): one HTML page and its JSON, written together.

Every value goes through Jinja2's autoescaping (model names, GPU names, error messages are user strings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtq import __version__
from trtq.artifacts.io import atomic_pair
from trtq.artifacts.paths import check_output_path


def write_serving_comparison(result: dict, out_html: str | os.PathLike[str]) -> Path:
    from trtq.report.render import _environment

    out_html = Path(out_html)
    check_output_path(out_html, suffixes=(".html", ".htm"))
    json_path = out_html.with_suffix(".json")
    check_output_path(json_path, suffixes=(".json",))
    html = _environment().get_template("serving.html.j2").render(r=result, trtq_version=__version__)
    with atomic_pair(json_path, out_html) as (tmp_json, tmp_html):
        tmp_json.write_text(json.dumps(result, indent=1), encoding="utf-8")
        tmp_html.write_text(html, encoding="utf-8")
    return out_html
