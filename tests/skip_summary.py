"""python -m tests.skip_summary JUNIT_XML: one line saying how many tests skipped and why."""

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def main(path: str) -> int:
    reasons = Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            reasons[(skipped.get("message") or "no reason given").strip()] += 1
    total = sum(reasons.values())
    if not total:
        print("skipped: 0 tests")
    else:
        detail = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common())
        print(f"skipped: {total} tests ({detail})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
