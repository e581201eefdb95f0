#!/usr/bin/env python3
"""The original one-request script, kept for its users: same flags, same JSON on stdout.

    python benchmark.py --host 127.0.0.1 --port 8080 --model M --prompt "Say hi" --stream

It is now a thin front for `tpsload run`; use that for anything more.
"""

import json
import os
import subprocess
import sys
import tempfile

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "result.json")
        argv = sys.argv[1:]
        if "--stream" not in argv:
            argv.append("--no-stream")  # the original script streamed only when asked
        p = subprocess.run([sys.executable, "-m", "tpsload", "run", *argv, "--json", out, "-q"])
        if not os.path.exists(out):
            sys.exit(p.returncode)
        with open(out) as fh:
            res = json.load(fh)
        keys = ("mode", "tokens", "elapsed_seconds", "tokens_per_second")
        print(json.dumps({k: res.get(k) for k in keys} | {"tpsload": res.get("summary")}, indent=2))
        sys.exit(p.returncode)
