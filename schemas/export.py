"""Write every event's JSON Schema to `schemas/json/`, so analytics can read the contract without our code.

It also rewrites the README's tables of topics and events (`schemas.contract_doc`). Run
`python -m schemas.export` after changing an event or a topic; a test fails while the committed
files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas import contract_doc
from schemas.events import event_classes

OUT_DIR = Path(__file__).parent / "json"


def rendered() -> dict[str, str]:
    """File name → JSON Schema text, for every event class."""
    return {
        f"{cls.__name__}.json": json.dumps(cls.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for cls in event_classes()
    }


def main() -> None:
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT_DIR / name).write_text(text)
    contract_doc.README.write_text(contract_doc.updated(contract_doc.README.read_text()))
    print(f"wrote {len(rendered())} schemas to {OUT_DIR}, and the README's contract tables", file=sys.stderr)


if __name__ == "__main__":
    main()
