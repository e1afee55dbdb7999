"""Regenerate dvc_plots_template.html: DVC's HTML page with Vega, Vega-Lite and Vega-Embed inlined.

`dvc plots show` normally writes <script src="https://cdn.jsdelivr.net/..."> tags, so its HTML is
blank without network. .dvc/config points `plots.html_template` at the template this script
writes, which has no {scripts} placeholder (DVC's CDN tags are dropped) and carries the libraries
in one inline <script>. The bundle comes from the vl-convert-python wheel (PyPI), only needed here:

    pip install --target /tmp/vlc vl-convert-python
    PYTHONPATH=/tmp/vlc python vendor/vega/build_template.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import vl_convert as vlc

VEGA_LITE = "5.21"  # DVC's templates are Vega-Lite v5 specs

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>OCR-MEM plots</title>
    <!-- vega {vega}, vega-lite {vl}, vega-embed {embed}: bundled by vl-convert-python {vlc}
         (vendor/vega/build_template.py); BSD-3-Clause, see vendor/vega/README.md -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(out: str = str(Path(__file__).with_name("dvc_plots_template.html"))) -> None:
    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE)
    if "</script" in bundle or "{plot_divs}" in bundle:
        sys.exit("the bundle contains a string that would break the inline <script>: not written")
    from importlib.metadata import version

    html = PAGE.format(vega=vlc.get_vega_version(), vl=VEGA_LITE, embed=vlc.get_vega_embed_version(),
                       vlc=version("vl-convert-python"), bundle=bundle)
    Path(out).write_text(html, encoding="utf-8")
    print(f"{out}: {len(html) / 1e6:.2f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:])
