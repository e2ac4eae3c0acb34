"""A real --on-decision command for the tests: `python hook_script.py MODE RECORD_FILE [SECONDS]`.

Modes: record (append one JSON line: the WASTE_EDGE_* environment and the stdin document), slow (sleep
SECONDS, then record), fail (record, say why on stderr, exit 1), hang (start a grandchild `sleep`, write
both pids to RECORD_FILE.pids, sleep forever: only a kill of the whole process group ends both), by-label
(what a bin does with a flaky flap: B records, N records and fails, uncertain hangs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def record(path: str) -> None:
    stdin = sys.stdin.read()
    env = {k: v for k, v in os.environ.items() if k.startswith("WASTE_EDGE_")}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"env": env, "stdin": stdin, "pid": os.getpid()}) + "\n")


def main() -> int:
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "by-label":
        mode = {"B": "record", "N": "fail"}.get(os.environ.get("WASTE_EDGE_LABEL", ""), "hang")
    if mode == "record":
        record(path)
    elif mode == "slow":
        time.sleep(float(sys.argv[3]))
        record(path)
    elif mode == "fail":
        record(path)
        print("flap jammed", file=sys.stderr)
        return 1
    elif mode == "hang":
        child = subprocess.Popen(["sleep", "600"])
        with open(path + ".pids", "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {child.pid}\n")
        time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
