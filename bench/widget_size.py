"""Print what a page downloads for the banner: JS and CSS, raw and gzip, vs the budget.

A page downloads one script: consent.js as the app serves it (minified, consent.css
inside it; see ``consent.widget``), gzipped at level 9 as the app
sends it. The rows before it show each readable source file and its compacted form.

    python bench/widget_size.py
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consent.widget import build_script, compact_css, compact_js  # noqa: E402 (path above)

BUDGET = 8 * 1024  #: bytes, gzip, JS + CSS together
FOLDER = ROOT / "static" / "widget"


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def main() -> int:
    """Print the size table; exit 1 when what a page downloads is over budget."""
    js = (FOLDER / "consent.js").read_text(encoding="utf-8")
    css = (FOLDER / "consent.css").read_text(encoding="utf-8")
    served = build_script(js, css).encode()
    rows = [
        ("consent.js source", js.encode()),
        ("consent.css source", css.encode()),
        ("consent.js compact", compact_js(js).encode()),
        ("consent.css compact", compact_css(css).encode()),
        ("served: JS + CSS", served),
    ]
    print(f"{'what':<22}{'raw bytes':>12}{'gzip bytes':>12}")
    for name, data in rows:
        if name.startswith("served"):
            print("-" * 46)
        print(f"{name:<22}{len(data):>12,}{gzip_size(data):>12,}")
    total = gzip_size(served)
    verdict = "within" if total <= BUDGET else "OVER"
    print(
        f"\nA page downloads {total:,} bytes gzip ({total / 1024:.2f} KiB) of JS + CSS: "
        f"{verdict} the {BUDGET:,}-byte (8 KiB) budget, {BUDGET - total:,} bytes to spare."
    )
    return 0 if total <= BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
